"""Prints the cold-start, concurrency and cost models next to the benchmark's timings.

    report.print_models()  # reads the program from the repository

The figures come from benchmarks/cold_start_model.py; the published ones they rest on, with
their sources, are in benchmarks/published.py.
"""

from cold_start_model import (
    Program,
    after_setup,
    always_on,
    before_setup,
    cold_start_for,
    concurrent_for,
    cpu_node_fit,
    node_price_per_hour,
    per_run_queued_to_train,
    read_program,
    run_bill,
    scale_set_cold_start_for,
    scale_set_concurrent_for,
    scale_set_setup,
    warm_start_for,
)
from program import settings
from program.catalog.gpus import smallest_machine
from published import GKE_FREE_TIER_PER_MONTH, GPU_TYPES, HOURS_PER_MONTH, JOB_MINUTES, POD_ON_READY_NODE, RUNNER_START


def _m(seconds: float) -> str:
    return f"{seconds / 60:5.1f}"


def print_models(program: Program | None = None) -> None:
    program = program or read_program()
    before, after = before_setup(), after_setup(program)
    d = program.defaults
    print()
    print("MODELS (published figures and stated assumptions; sources in benchmarks/published.py)")
    print(
        f"read from the program: gpuMaxNodes {settings.DEFAULT_GPU_MAX_NODES}, base runners "
        f"{after.base_runners} (default_base_runner_replicas), CPU machine {after.cpu_machine} "
        f"(default_cpu_machine), profile {after.profile} (Pulumi.yaml: {d['autoscalingProfile']}), "
        f"gpuWarmRunners {d['gpuWarmRunners']}, cpuMinNodes {d['cpuMinNodes']}, boot disk {program.boot_disk_gb} GB"
    )
    print(
        f"read from the workflow: start job GPU_RUNNER_TIMEOUT_SECONDS {program.start_timeout_seconds:.0f}, "
        f"gpu-runner poll {program.poll_seconds:g} s, placeholder grace {program.placeholder_grace_seconds} s"
    )

    # 1. Cold start.
    print()
    print("1. Cold start of one GPU runner, pool at zero: pod created -> `train` starts (seconds)")
    rows = {
        "before": cold_start_for(before, program.poll_seconds),
        "after": cold_start_for(after, program.poll_seconds),
        "floor": cold_start_for(after, program.poll_seconds, "low"),
    }
    print(f"   {'part':<38}{'before':>8}{'after':>8}{'floor':>8}")
    for part in rows["before"]:
        print(f"   {part:<38}" + "".join(f"{rows[r][part]:8.1f}" for r in rows))
    print(f"   {'total':<38}" + "".join(f"{sum(rows[r].values()):8.1f}" for r in rows))
    print(f"   {'total, minutes':<38}" + "".join(f"{sum(rows[r].values()) / 60:8.2f}" for r in rows))
    warm, warm_low, warm_high = (warm_start_for(program, w) for w in ("typical", "low", "high"))
    print(
        f"   warm node (gpuWarmRunners >= 1, image on node): {sum(warm.values()):.1f} s "
        f"(range {sum(warm_low.values()):.1f}-{sum(warm_high.values()):.1f})"
    )
    print("     = " + " + ".join(f"{k} {v:g}" for k, v in warm.items()))
    print(
        "   before: pull from GHCR after the driver; after: streamed from Artifact Registry and preloaded "
        "during the driver install; floor: every part at its published fast end"
    )

    # 2. Concurrent runs.
    job = 5
    print()
    print(
        f"2. N runs started together, {job}-minute jobs: minutes until run k's `train` starts "
        "(run k's figure is the same for every N >= k)"
    )
    columns = []
    for gpu_max in (settings.DEFAULT_GPU_MAX_NODES, 5):
        later = after_setup(program, gpu_max)
        columns.append(
            (f"max {gpu_max}, before ({before.base_runners} base)", concurrent_for(before, program, 5, job, gpu_max))
        )
        columns.append(
            (f"max {gpu_max}, after ({later.base_runners} base)", concurrent_for(later, program, 5, job, gpu_max))
        )
    print("   run" + "".join(f"{title:>25}" for title, _ in columns))
    for k in range(5):
        cells = []
        for _, timeline in columns:
            run = timeline[k]
            flags = "".join(
                flag
                for flag, on in (
                    ("c" if run.cold_node else "r", True),
                    ("b", run.waited_for_base_runner),
                    ("n", run.waited_for_node),
                    ("!", run.start_job_seconds > program.start_timeout_seconds),
                )
                if on
            )
            cells.append(f"{_m(run.train_starts)} {flags:<3}")
        print(f"   {k + 1:>3}" + "".join(f"{c:>25}" for c in cells))
    print(
        "   c new node (cold start)  r node reused (driver in, image on it)  b waited for a base runner  "
        f"n waited for a GPU node  ! start job waited over {program.start_timeout_seconds:.0f} s and fails"
    )
    print(
        "   assumptions: GitHub hands queued start jobs to base runners first come first served; a freed GPU "
        f"node takes the next pending runner in {POD_ON_READY_NODE.typical + RUNNER_START.typical:g} s; "
        f"a base runner is back {RUNNER_START.typical:g} s after its start job"
    )

    # 3. The bill.
    print()
    print("3. The bill (us-central1 list prices, on-demand; one run that adds a GPU node)")
    print("   billed GPU-node minutes and USD per run, by job length (after's cold start; the profile varies)")
    header = "".join(f"{f'{m}-min job':>19}" for m in JOB_MINUTES)
    print(f"   {'GPU':<18}{'machine':<15}{'profile':<21}{header}{'warm node/h':>13}{'spot/h':>9}")
    for gpu_type in GPU_TYPES:
        machine = smallest_machine(gpu_type, d["gpuCount"])
        hourly = node_price_per_hour(machine, gpu_type, d["gpuCount"], program.boot_disk_gb)
        hourly_spot = node_price_per_hour(machine, gpu_type, d["gpuCount"], program.boot_disk_gb, spot=True)
        for profile in ("BALANCED", "OPTIMIZE_UTILIZATION"):
            cells = ""
            for minutes in JOB_MINUTES:
                billed, usd = run_bill(after, program, gpu_type, minutes, profile)
                cells += f"{billed:5.1f} min ${usd:6.3f}".rjust(19)
            warm_cells = f"{f'${hourly:.3f}':>13}{f'${hourly_spot:.3f}':>9}" if profile == "BALANCED" else ""
            print(f"   {gpu_type:<18}{machine:<15}{profile:<21}{cells}{warm_cells}")
    monthly = {
        g: HOURS_PER_MONTH
        * node_price_per_hour(smallest_machine(g, d["gpuCount"]), g, d["gpuCount"], program.boot_disk_gb)
        for g in GPU_TYPES
    }
    print(
        "   a warm node bills its hourly price all month: "
        + ", ".join(f"{g} ${usd:.0f}" for g, usd in monthly.items())
        + f" per warm node ({HOURS_PER_MONTH} h, on-demand)"
    )
    t4 = d["gpuType"]
    b_min, b_usd = run_bill(before, program, t4, job)
    a_min, a_usd = run_bill(after, program, t4, job)
    print(
        f"   {job}-minute {t4} run: before ({before.profile}) {b_min:.1f} min ${b_usd:.3f}   "
        f"after ({after.profile}) {a_min:.1f} min ${a_usd:.3f}"
    )

    print(f"   {f'always-on, per month ({HOURS_PER_MONTH} h)':<46}{'before':>18}{'after':>18}")
    costs = {s.name: always_on(s.cpu_machine, d["cpuMinNodes"], program.boot_disk_gb) for s in (before, after)}
    lines = [
        ("CPU pool machine x cpuMinNodes", lambda c: f"{c.machine} x{c.nodes}"),
        ("  on-demand", lambda c: f"${c.machine_on_demand:.2f}"),
        ("  spot (cpuSpot)", lambda c: f"${c.machine_spot:.2f}"),
        (f"boot disk {program.boot_disk_gb} GB pd-balanced", lambda c: f"${c.boot_disk:.2f}"),
        ("GKE fee (zonal), before free tier", lambda c: f"${c.cluster_fee:.2f}"),
        (
            f"  after the ${GKE_FREE_TIER_PER_MONTH:.2f} free tier",
            lambda c: f"${max(0.0, c.cluster_fee - c.free_tier_credit):.2f}",
        ),
        ("total, on-demand, free tier", lambda c: f"${c.total():.2f}"),
        ("total, spot, free tier", lambda c: f"${c.total(spot=True):.2f}"),
        ("total, on-demand, free tier used up", lambda c: f"${c.total(free_tier=False):.2f}"),
    ]
    for label, cell in lines:
        print(f"   {label:<46}{cell(costs['before']):>18}{cell(costs['after']):>18}")
    for setup in (before, after):
        need_cpu, has_cpu, need_gib, has_gib = cpu_node_fit(setup.cpu_machine, setup.base_runners)
        print(
            f"   {setup.name}: {setup.base_runners} base runner(s) + broker + GKE pods ask {need_cpu:.2f} of "
            f"{has_cpu:.2f} cores and {need_gib:.2f} of {has_gib:.2f} GiB on one {setup.cpu_machine}"
        )

    print_scale_set_model(program)


def print_scale_set_model(program: Program) -> None:
    """4. runnerMode: scale-set next to per-run mode's defaults."""
    d = program.defaults
    after, scale_set = after_setup(program), scale_set_setup(program)
    print()
    print("4. runnerMode: scale-set (ARC) next to per-run, both with the defaults")
    parts = {which: scale_set_cold_start_for(scale_set, which) for which in ("typical", "low", "high")}
    for part, seconds in parts["typical"].items():
        print(f"   {part:<46}{seconds:8.1f}")
    per_run = {
        which: per_run_queued_to_train(after, program.poll_seconds, which) for which in ("typical", "low", "high")
    }
    print(
        f"   {'GPU job queued -> it starts, scale-set':<46}{sum(parts['typical'].values()):8.1f} s "
        f"(range {sum(parts['low'].values()):.1f}-{sum(parts['high'].values()):.1f})"
    )
    print(
        f"   {'start job queued -> train starts, per-run':<46}{per_run['typical']:8.1f} s "
        f"(range {per_run['low']:.1f}-{per_run['high']:.1f}): a start job first, and its poll"
    )
    job = 5
    gpu_max = settings.DEFAULT_GPU_MAX_NODES
    columns = (
        ("per-run", concurrent_for(after, program, 5, job, gpu_max)),
        ("scale-set", scale_set_concurrent_for(scale_set, 5, job, gpu_max)),
    )
    print(f"   5 GPU jobs queued together, {job}-minute jobs, gpuMaxNodes {gpu_max}: minutes until job k starts")
    print("   job" + "".join(f"{title:>12}" for title, _ in columns))
    for k in range(5):
        print(f"   {k + 1:>3}" + "".join(f"{_m(timeline[k].train_starts):>12}" for _, timeline in columns))
    minutes, usd = run_bill(scale_set, program, d["gpuType"], job)
    print(f"   one {job}-minute {d['gpuType']} job that adds a node: {minutes:.1f} billed GPU-node minutes, ${usd:.3f}")
    costs = {s.name: always_on(s.cpu_machine, d["cpuMinNodes"], program.boot_disk_gb) for s in (after, scale_set)}
    print(
        f"   always-on per month, on-demand, free tier: per-run {costs['after'].machine} x{costs['after'].nodes} "
        f"${costs['after'].total():.2f}, scale-set {costs['scale-set'].machine} x{costs['scale-set'].nodes} "
        f"${costs['scale-set'].total():.2f}; gpuWarmRunners idle runners bill a GPU node each, as warm nodes do"
    )
    need_cpu, has_cpu, need_gib, has_gib = cpu_node_fit(scale_set.cpu_machine, 0, scale_set=True)
    print(
        f"   scale-set: ARC's controller + listener + GKE pods ask {need_cpu:.2f} of {has_cpu:.2f} cores and "
        f"{need_gib:.2f} of {has_gib:.2f} GiB on one {scale_set.cpu_machine}; no base runner, no broker"
    )
