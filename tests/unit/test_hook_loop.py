"""The triggerer's event loop must not pay for importing the Google client library."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_first_async_client_imports_the_library_off_the_loop() -> None:
    # A fresh interpreter, so the library is not imported yet; a probe on the loop thread
    # records whether the heavy import ran there.
    code = textwrap.dedent(
        """
        import asyncio, os, sys, threading
        os.environ["BATCH_STREAMING_EMULATOR_HOST"] = "127.0.0.1:9"
        from airflow_batch_streaming.hooks.batch import BatchStreamingHook
        assert "google.cloud.batch_v1" not in sys.modules
        loop_thread = []

        class Probe:
            def find_spec(self, name, path=None, target=None):
                if name == "google.cloud.batch_v1" and threading.get_ident() == loop_thread[0]:
                    raise SystemExit("imported google.cloud.batch_v1 on the event loop")
                return None

        sys.meta_path.insert(0, Probe())

        async def main():
            loop_thread.append(threading.get_ident())
            client = await BatchStreamingHook().get_async_batch_client()
            print(type(client).__name__)

        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "BatchServiceAsyncClient"
