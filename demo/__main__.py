"""``python -m demo``: a VM disk lifecycle through onevita's real entry points, in both job modes.

First ``onevita install`` puts the driver into a scratch front-end shaped like OpenNebula 7.0
(twice: the second run changes nothing) and ``onevita doctor`` checks it. Each lifecycle step is
then printed as OpenNebula's one_tm / one_datastore run it (argv relative to the remotes
directory), with its exit code, wall time and the driver's log lines; then the images left in
the cluster, and a per-action time comparison of the ssh and front-end modes. Exits 1 if any
step fails or any image is left once both images are deleted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from demo import MODES, Lifecycle, StepFailed, World
from tests.cloud import REMOTES, Result
from tests.install.conftest import ZIPAPP, make_frontend

TITLES = {"ssh": "ssh mode: jobs run on the VM's host / a BRIDGE_LIST host over one ssh call",
          "frontend": "front-end mode: VITASTOR_ON_FRONTEND=YES, jobs run in the front-end's process"}


def show(label: str, result: Result) -> None:
    argv = " ".join([str(Path(result.argv[0]).relative_to(REMOTES)), *result.argv[1:]])
    stdin = "  < base64 DS_DRIVER_ACTION_DATA" if label.endswith("monitor") else ""
    print(f"\n$ {argv}{stdin}")
    print(f"  exit {result.rc}  {result.seconds * 1000:7.1f} ms")
    for line in result.stdout.splitlines():
        print(f"  stdout| {line}")
    for line in result.stderr.splitlines():
        print(f"  stderr| {line}")


def note(text: str) -> None:
    print(f"  >> {text}")


def install(world: World) -> bool:
    """onevita install, install again, doctor: on a scratch OpenNebula 7.0 front-end's files."""
    print(f"\n{'=' * 100}\nonevita install into a scratch OpenNebula 7.0 front-end\n{'=' * 100}")
    cloud = world.cloud("frontend", "demo-install")
    frontend = make_frontend("7.0", world.base / "frontend-root", dict(cloud.env))
    ok = True
    for args in (["install"], ["install"], ["doctor"]):
        proc = subprocess.run(["/usr/bin/python3", str(ZIPAPP), *args, "--root", str(frontend.root)],
                              capture_output=True, text=True, env=frontend.env, check=False)
        print(f"\n$ python3 onevita.pyz {' '.join(args)} --root {frontend.root}\n  exit {proc.returncode}")
        for line in (proc.stdout + proc.stderr).splitlines():
            print(f"  | {line}")
        ok = ok and proc.returncode == 0
    return ok


def run_mode(world: World, mode: str) -> tuple[Lifecycle, bool]:
    print(f"\n{'=' * 100}\n{TITLES[mode]}\n{'=' * 100}")
    name = f"demo-{mode}"
    cloud = world.cloud(mode, name)
    life = Lifecycle(world, cloud, world.base / name, show=show, note=note)
    ok = True
    try:
        life.run()
    except (StepFailed, AssertionError) as e:
        print(f"\nFAILED: {e}")
        ok = False
    images = life.leftovers()
    print(f"\nimages left in the cluster: {len(images)}")
    for name, description in images.items():
        print(f"  {name:<16} {description}")
    if ok and images:
        print(f"\nFAILED: the images were deleted, but the cluster still has {sorted(images)}")
        ok = False
    return life, ok


def compare(lives: dict[str, Lifecycle]) -> None:
    ssh, frontend = lives["ssh"].results, lives["frontend"].results
    print(f"\n{'action':<20}{'ssh ms':>10}{'front-end ms':>14}{'front-end/ssh':>15}")
    for label in ssh:
        if label in frontend:
            a, b = ssh[label].seconds * 1000, frontend[label].seconds * 1000
            print(f"{label:<20}{a:>10.1f}{b:>14.1f}{b / a:>15.2f}")
    total_a = sum(r.seconds for r in ssh.values()) * 1000
    total_b = sum(r.seconds for r in frontend.values()) * 1000
    print(f"{'total':<20}{total_a:>10.1f}{total_b:>14.1f}{total_b / total_a:>15.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    lives: dict[str, Lifecycle] = {}
    ok = True
    with World(keep=args.keep) as world:
        print(f"etcd {world.etcd.url}, sshd 127.0.0.1:{world.sshd.port} (node1, node2, bridge1, bridge2, "
              f"one-fe), oned stand-in {world.oned.endpoint}")
        print(f"remotes {REMOTES}, working directory {world.base}")
        ok = install(world)
        for mode in MODES if ok else ():
            lives[mode], mode_ok = run_mode(world, mode)
            ok = ok and mode_ok
            if not mode_ok:
                break
    if ok:
        compare(lives)
        print("\ndemo OK")
    else:
        print("\ndemo FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
