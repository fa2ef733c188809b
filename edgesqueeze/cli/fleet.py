"""``edgesqueeze fleet``: fleets through Ansible (a generated playbook, and its results merged)."""
from __future__ import annotations

import click

from .common import emit, info, json_option


@click.group("fleet")
@json_option
@click.pass_context
def command(ctx, as_json):
    """Benchmark a bundle on a fleet with Ansible: write a playbook, run it with ansible-playbook, collect.

    \b
    Examples:
      edgesqueeze fleet playbook bundle/ -i inventory.ini -o play/
      cd play && ansible-playbook playbook.yml --limit lab
      edgesqueeze fleet collect play/ -o report/
    """
    ctx.obj = {"json": as_json}  # 'fleet --json VERB' = 'fleet VERB --json'


@command.command("playbook")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("-i", "--inventory", type=click.Path(exists=True), default=None, metavar="INVENTORY",
              help="Ansible inventory: checked now and named in the playbook's ansible.cfg.")
@click.option("--limit", default=None, metavar="PATTERN", help="With -i: the hosts to check now.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="The playbook folder.")
@click.option("-n", "--iterations", type=click.IntRange(min=1), default=100, show_default=True,
              help="Timed iterations on each device.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Warm-up iterations.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="Run for S seconds instead of N iterations.")
@click.option("--backend", type=click.Choice(["auto", "trtexec", "trt", "ort"]), default="auto", show_default=True,
              help="On-device backend; auto = trtexec, else TensorRT Python, else onnxruntime.")
@click.option("--power", type=click.Choice(["auto", "tegrastats", "none"]), default="auto", show_default=True,
              help="Power probe on the devices (auto: tegrastats when a device has it).")
@click.option("--remote-dir", default=None, metavar="DIR",
              help="Bundle folder on the devices (default edgesqueeze/<name> under the home).")
@click.option("--forks", type=click.IntRange(min=1), default=50, show_default=True,
              help="ansible.cfg forks: hosts at once (the same default as bench --devices).")
@click.option("--link", is_flag=True, help="Point the playbook at BUNDLE instead of copying it.")
@json_option
@click.pass_context
def playbook(ctx, bundle, inventory, limit, output, iterations, warmup, duration, backend, power, remote_dir, forks,
             link, as_json):
    """Write a self-contained playbook folder that benchmarks BUNDLE on every inventory host.

    The folder holds playbook.yml, ansible.cfg (forks, pipelining, ControlPersist, the inventory) and a copy of
    BUNDLE (--link: a pointer to it). Run it with ansible-playbook from that folder, then 'fleet collect'.

    \b
    Examples:
      edgesqueeze fleet playbook bundle/ -i inventory.ini -o play/ -n 200
      edgesqueeze fleet playbook bundle/ -i inventory.yml --limit lab -o play/ --forks 20 --power none
    """
    from ..deploy.playbook import write_playbook

    as_json = as_json or (ctx.obj or {}).get("json", False)

    written = write_playbook(bundle, output, inventory=inventory, limit=limit, iterations=iterations, warmup=warmup,
                             duration=duration, backend=backend, power=power, remote_dir=remote_dir, forks=forks,
                             link=link)
    emit(written, as_json, lambda w: f"wrote {w['playbook']}" + (f" for {len(w['hosts'])} host(s)" if w["hosts"]
                                                                   else "") +
         f"\nrun it: cd {output} && ansible-playbook playbook.yml" + ("" if inventory else " -i INVENTORY"))
    return 0


@command.command("collect")
@click.argument("play", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="The report folder.")
@click.option("--no-plots", is_flag=True, help="Markdown only.")
@click.option("--record-host", is_flag=True,
              help="Keep host and user names, addresses and absolute paths in the results (left out by default).")
@json_option
@click.pass_context
def collect(ctx, play, output, no_plots, record_host, as_json):
    """Merge a playbook run's results (every host, with its status) into one report. Exit 6 if a host failed.

    Writes fleet.json (each host's status), fleet.md, report.md with plots, and <host>/results.json, as
    'bench --devices' does.

    \b
    Examples:
      edgesqueeze fleet collect play/ -o report/
      edgesqueeze fleet collect play/ -o report/ --no-plots --json
    """
    from ..deploy.playbook import collect_results
    from .deploy import bench_text

    as_json = as_json or (ctx.obj or {}).get("json", False)

    results = collect_results(play, output, plots=not no_plots, record_host=record_host)
    emit(results, as_json, lambda _: bench_text(results))
    info(f"report written to {output}")
    return 6 if any(r.get("error") for r in results) else 0
