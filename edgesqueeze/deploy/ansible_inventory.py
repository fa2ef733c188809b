"""Ansible inventories as fleets: the hosts of an INI or YAML inventory become fleet devices.

Read with ansible-core's own inventory API (``InventoryManager`` + ``DataLoader`` + ``VariableManager``), so
groups, ``[group:vars]``, ``group_vars/``/``host_vars/`` folders, host ranges, Jinja in variables and
``--limit`` patterns mean exactly what they mean to ``ansible-playbook``. Per host:

=================================  ===================================================
inventory variable                 fleet device key
=================================  ===================================================
``inventory_hostname``             ``name`` (the label in reports)
``ansible_host`` (else the name)   ``host``
``ansible_user``                   ``user``
``ansible_port``                   ``port``
``ansible_ssh_private_key_file``   ``identity``
``ansible_ssh_common_args`` and    ``ssh_options`` (``-o K=V`` / ``-oK=V`` / ``-J host``)
``ansible_ssh_extra_args``
``edgesqueeze_target``             ``target`` (checked as fleet.toml's ``target``)
``edgesqueeze_python``, else       ``python``
``ansible_python_interpreter``
``edgesqueeze_remote_dir``         ``remote_dir``
``edgesqueeze_bundle``             ``bundle``
=================================  ===================================================

Needs the ``ansible`` extra (``pip install 'edgesqueeze[ansible]'``, i.e. ansible-core).
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

from .._lazy import require
from ..errors import InputError

INVENTORY_SUFFIXES = (".ini", ".yml", ".yaml", ".cfg", ".hosts")
EXTRA = "reading Ansible inventories"

# inventory variable -> fleet device key (ssh options are parsed apart)
HOST_VARS = {"ansible_host": "host", "ansible_user": "user", "ansible_port": "port",
             "ansible_ssh_private_key_file": "identity", "edgesqueeze_target": "target",
             "edgesqueeze_remote_dir": "remote_dir", "edgesqueeze_bundle": "bundle"}
SSH_ARG_VARS = ("ansible_ssh_common_args", "ansible_ssh_extra_args")


def looks_like_inventory(path) -> bool:
    """True when ``path`` is an Ansible inventory rather than a fleet.toml.

    A folder, or a file ending in .ini/.yml/.yaml/.cfg/.hosts, is an inventory; .toml is a fleet file; any other
    file is a fleet file when it holds ``[[device]]`` or ``[devices.`` tables, an inventory otherwise.
    """
    p = Path(path)
    if p.is_dir() or p.suffix.lower() in INVENTORY_SUFFIXES:
        return True
    if p.suffix.lower() == ".toml":
        return False
    try:
        head = p.read_text(encoding="utf-8", errors="replace")[:65536]
    except OSError:
        return False  # the fleet reader names the unreadable file
    return not any(line.strip().startswith(("[[device]]", "[[devices]]", "[devices.", "[device."))
                   for line in head.splitlines())


def read_inventory(path, limit: Optional[str] = None) -> List[dict]:
    """Read an Ansible inventory; return one raw fleet device dict per host (checked by ``read_fleet``).

    Args:
        path: an INI or YAML inventory file, or an inventory folder.
        limit: an Ansible ``--limit`` pattern (``lab``, ``lab:&orin``, ``'jetson-*,!jetson-3'``).

    Raises:
        MissingDependencyError: ansible-core is not installed.
        InputError: a missing inventory, no hosts (unparsable, or the limit matched none), or an ssh argument
            that is not an option.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such inventory", path=str(path))
    require("ansible", EXTRA)
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(path)])
    variables = VariableManager(loader=loader, inventory=inventory)
    if limit:
        inventory.subset(limit)
    hosts = inventory.get_hosts("all")
    if not hosts:
        why = f"--limit {limit!r} matched no host" if limit else "Ansible found no hosts in it"
        raise InputError(f"no devices: {why}", path=str(path))
    return [_host_device(h.name, variables.get_vars(host=h), Templar(loader=loader), path) for h in hosts]


def _host_device(name: str, hostvars: dict, templar, path: Path) -> dict:
    templar.available_variables = hostvars

    def value(key):
        v = hostvars.get(key)
        return templar.template(v) if isinstance(v, str) else v

    dev = {"name": name, "host": name}
    for var, key in HOST_VARS.items():
        v = value(var)
        if v not in (None, ""):
            dev[key] = v
    python = value("edgesqueeze_python") or value("ansible_python_interpreter")
    if python and not str(python).startswith("auto"):
        dev["python"] = str(python)
    options = []
    for var in SSH_ARG_VARS:
        options += ssh_options_from_args(value(var) or "", f"{name}: {var}", path)
    if options:
        dev["ssh_options"] = options
    return dev


def ssh_options_from_args(args: str, where: str, path=None) -> List[str]:
    """Turn ssh command-line arguments (``-o K=V``, ``-oK=V``, ``-J host``) into ``-o`` option strings.

    Raises:
        InputError: any other argument (edgesqueeze passes options only, never raw arguments, to ssh).
    """
    words = shlex.split(str(args))
    out: List[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("-o", "-J") and i + 1 < len(words):
            out.append(words[i + 1] if w == "-o" else f"ProxyJump={words[i + 1]}")
            i += 2
            continue
        if w.startswith("-o") and len(w) > 2:
            out.append(w[2:])
        elif w.startswith("-J") and len(w) > 2:
            out.append(f"ProxyJump={w[2:]}")
        else:
            raise InputError(f"{where}: unsupported ssh argument {w!r} (give ssh options as -o Key=Value or "
                             f"-J jumphost)", path=str(path) if path else None)
        i += 1
    return out
