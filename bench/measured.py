"""`python bench/measured.py ARGS...`: the `dsdt` command line, reporting at exit its own CPU
seconds (its child processes included, e.g. git) and peak RSS (VmHWM) as one `BENCH {...}` line on
stderr. Its own high-water mark, not wait4's: Linux carries a parent's size into a forked child."""

import atexit
import json
import os
import resource
import sys

REQUESTS: dict[str, int] = {}  # "service:Operation" -> calls this process made (BENCH_COUNT_REQUESTS=1)


def _count_requests() -> None:
    import botocore.client

    make_api_call = botocore.client.BaseClient._make_api_call

    def counted(self, operation_name, api_params):  # type: ignore[no-untyped-def]
        key = f"{self.meta.service_model.service_name}:{operation_name}"
        REQUESTS[key] = REQUESTS.get(key, 0) + 1
        return make_api_call(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = counted


def _report() -> None:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    with open("/proc/self/status", encoding="utf-8") as status:
        hwm_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    report = {"cpu": cpu, "hwm_kb": hwm_kb, "requests": REQUESTS}
    print("BENCH " + json.dumps(report), file=sys.stderr, flush=True)


atexit.register(_report)
if os.environ.get("BENCH_COUNT_REQUESTS"):
    _count_requests()

from disdat_luigi.cli.main import main  # noqa: E402  (after the hook, so it always reports)

if os.environ.get("BENCH_PROFILE"):  # a cProfile of the command, to see where its CPU goes
    import cProfile

    profiler = cProfile.Profile()
    atexit.register(lambda: profiler.dump_stats(os.environ["BENCH_PROFILE"]))
    profiler.enable()
sys.exit(main(sys.argv[1:]))
