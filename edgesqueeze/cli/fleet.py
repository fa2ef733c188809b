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
@click.option("-i", "--inventory", type=click.Path(exists=True), default=None,
              help="Ansible inventory: checked now and named in the playbook's ansible.cfg.")
@click.option("--limit", default=None, metavar="PATTERN", help="With -i: the hosts to check now.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="The playbook folder.")
@click.option("-n", "--iterations", type=int, default=100, show_default=True)
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--duration", type=float, default=None, help="Run for S seconds instead of N iterations.")
@click.option("--backend", type=click.Choice(["auto", "trtexec", "trt", "ort"]), default="auto", show_default=True)
@click.option("--power", type=click.Choice(["auto", "tegrastats", "none"]), default="auto", show_default=True)
@click.option("--remote-dir", default=None, help="Bundle folder on the devices (default edgesqueeze/<name>).")
@click.option("--forks", type=int, default=50, show_default=True, help="ansible.cfg forks (hosts at once).")
@click.option("--link", is_flag=True, help="Point the playbook at BUNDLE instead of copying it.")
@json_option
@click.pass_context
def playbook(ctx, bundle, inventory, limit, output, iterations, warmup, duration, backend, power, remote_dir, forks,
             link, as_json):
    """Write a self-contained playbook folder that benchmarks BUNDLE on every inventory host."""
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
    """Merge a playbook run's results (every host, with its status) into one report. Exit 6 if a host failed."""
    from ..deploy.playbook import collect_results
    from .deploy import bench_text

    as_json = as_json or (ctx.obj or {}).get("json", False)

    results = collect_results(play, output, plots=not no_plots, record_host=record_host)
    emit(results, as_json, lambda _: bench_text(results))
    info(f"report written to {output}")
    return 6 if any(r.get("error") for r in results) else 0
