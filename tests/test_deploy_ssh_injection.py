"""A device address can never reach ssh as an option: user and host are checked, and ssh gets `--` first."""
from __future__ import annotations

import pytest

from edgesqueeze.cli import main
from edgesqueeze.deploy.fleet import read_fleet
from edgesqueeze.deploy.ssh import SshTransport, parse_device
from edgesqueeze.errors import InputError

INJECTIONS = [
    "-oPermitLocalCommand=yes -oLocalCommand=touch x@127.0.0.1",
    "-oProxyCommand=touch_x@127.0.0.1",
    "nvidia@-oProxyCommand=touch_x",
    "-oProxyCommand=touch_x",
    "nvidia@host\n-oProxyCommand=x",
    "nvidia@host\x00",
    "$(touch x)@127.0.0.1",
    "nvidia@`touch x`",
    "nvidia;touch x@127.0.0.1",
    "nv idia@127.0.0.1",
]


@pytest.mark.parametrize("spec", INJECTIONS)
def test_injection_strings_are_refused(spec):
    with pytest.raises(InputError, match="bad device"):
        parse_device(spec)


@pytest.mark.parametrize("spec", ["nvidia@orin-nano.local", "orin", "ubuntu@10.0.0.12:2222", "jet_son.1@[fe80::1%eth0]:22",
                                  "a-b@my-host"])
def test_ordinary_addresses_still_parse(spec):
    assert parse_device(spec).host


def test_ssh_gets_a_double_dash_before_the_destination():
    args = SshTransport("nvidia@127.0.0.1:2222").base_args()
    assert args[-2:] == ["--", "nvidia@127.0.0.1"]


def test_cli_refuses_an_injected_device_without_running_ssh(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = "-oPermitLocalCommand=yes -oLocalCommand=touch x@127.0.0.1"
    code = main(["deploy", str(tmp_path), "--device", spec])
    assert code in (2, 3)  # bad command line or bad input, never a connection attempt
    assert not (tmp_path / "x").exists()


def test_fleet_file_host_and_user_are_checked(tmp_path):
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[device]]\nname = "a"\nhost = "127.0.0.1"\nuser = "-oProxyCommand=touch_x"\n')
    with pytest.raises(InputError, match="bad host or port"):
        read_fleet(fleet)
