"""``onevita firewall``: keep VMs away from the Vitastor cluster on a hypervisor.

Vitastor has no authentication: any VM that can reach an OSD or etcd can read and write every
image. With VLAN networking the switch separates VMs from the storage network; with a plain
Linux bridge the hypervisor must filter. These are the rules Vitastor's OpenNebula guide gives
for that case (VMs' own subnet only on the bridge, nothing from the VM subnet to the
hypervisor subnet, forwarded or local), printed by default and added only with ``--apply``.
Adding is idempotent: ``iptables -C`` first, so a second run adds nothing.
"""

from __future__ import annotations

import argparse
import ipaddress
import re

from ..errors import BadRequest
from ..run import run

__all__ = ["firewall", "rules"]

_INTERFACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,14}")


def _network(value: str, what: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError as e:
        raise BadRequest(f"{what}: not an IP network: {value!r}") from e


def _interface(value: str, what: str) -> str:
    if not _INTERFACE.fullmatch(value):
        raise BadRequest(f"{what}: not a network interface name: {value!r}")
    return value


def rules(vm_net: str, host_net: str, bridge: str, uplink: str | None) -> list[tuple[str, ...]]:
    """The rules as (chain, position, match and target...) tuples, in the order they apply."""
    vm_net, host_net = _network(vm_net, "--vm-net"), _network(host_net, "--host-net")
    bridge = _interface(bridge, "--bridge")
    result: list[tuple[str, ...]] = []
    if uplink:
        # the hypervisor's own traffic arriving through the bridge's physical port stays allowed
        result.append(("INPUT", "-A", "-m", "physdev", "--physdev-in", _interface(uplink, "--uplink"),
                       "-j", "ACCEPT"))
    result += [
        # from the VM bridge only the VM subnet may reach the hypervisor (no spoofed host addresses)
        ("INPUT", "-A", "!", "-s", vm_net, "-i", bridge, "-j", "DROP"),
        # nothing from the VM subnet to the hypervisor/storage subnet, local or forwarded
        ("INPUT", "-A", "-s", vm_net, "-d", host_net, "-j", "DROP"),
        ("FORWARD", "-I", "-s", vm_net, "-d", host_net, "-j", "DROP"),
    ]
    return result


def _command(rule: tuple[str, ...], action: str) -> list[str]:
    chain, position, *spec = rule
    if action == "-C":
        return ["iptables", "-C", chain, *spec]
    return ["iptables", position, chain, *(["1"] if position == "-I" else []), *spec]


def firewall(*argv: str) -> int:
    """Print (or with --apply, add) the iptables rules separating VMs from the storage network."""
    parser = argparse.ArgumentParser(prog="onevita firewall", description=__doc__.split("\n\n")[0])
    parser.add_argument("--vm-net", required=True, help="the VMs' subnet, e.g. 10.0.3.0/24")
    parser.add_argument("--host-net", required=True, help="the hypervisor/storage subnet, e.g. 10.0.2.0/24")
    parser.add_argument("--bridge", default="onebr0", help="the VM bridge (default onebr0)")
    parser.add_argument("--uplink", help="the bridge's physical port, e.g. eth0 (optional)")
    parser.add_argument("--apply", action="store_true", help="add the missing rules with iptables now")
    args = parser.parse_args(argv)
    for rule in rules(args.vm_net, args.host_net, args.bridge, args.uplink):
        command = _command(rule, "add")
        if not args.apply:
            print(" ".join(command))
        elif run(_command(rule, "-C"), check=False).returncode == 0:
            print(f"present: {' '.join(command)}")
        else:
            run(command)
            print(f"added: {' '.join(command)}")
    if not args.apply:
        print("# not applied: run again with --apply to add them (and make them persistent, "
              "e.g. with iptables-persistent)")
    return 0
