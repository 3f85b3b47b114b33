from airflow_batch_streaming.cli import main

raise SystemExit(main())
