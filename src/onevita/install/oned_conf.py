"""The oned.conf edits onevita needs, following the editor contract of ``edits.py``.

oned.conf has no drop-in directory, so a storage driver has to be named in several places of
the one file (OpenNebula's ``share/etc/oned.conf``; driver contract §9 and §12):

* ``vitastor`` in the ``-d`` list of ``TM_MAD`` ARGUMENTS and in the ``-d`` and ``-s`` lists of
  ``DATASTORE_MAD`` ARGUMENTS — without them one_tm/one_datastore answer "driver not available";
* ``-l deploy=deploy.vitastor,attach_disk=attach_disk.vitastor,save=save.vitastor,
  restore=restore.vitastor`` in the kvm ``VM_MAD`` ARGUMENTS, so deploy and disk hot-plug run
  onevita's front-end scripts that write Vitastor disks into the domain XML, and checkpoints
  (stop, suspend, undeploy) go into Vitastor: the stock ``kvm/save`` never reaches its
  ``save.<TM_MAD>`` hook (``retry_if`` exits first). Merged into an existing ``-l``; another
  driver's override of the same action is a conflict the admin must settle, never overwritten;
* ``INHERIT_DATASTORE_ATTR`` for VITASTOR_CONF and IMAGE_PREFIX, so DISKs carry them;
* ``VM_RESTRICTED_ATTR`` DISK/VITASTOR_CONF, DISK/POOL_NAME, DISK/IMAGE_PREFIX and
  ``IMAGE_RESTRICTED_ATTR`` VITASTOR_CONF, POOL_NAME, IMAGE_PREFIX: oned copies a datastore
  attribute into a DISK only when the DISK has none, so unrestricted, a user could point a disk
  at another cluster or image name;
* ``TM_MAD_CONF`` and ``DS_MAD_CONF`` vectors for ``NAME = "vitastor"``.

Every piece already present — added by the admin or by the old bash driver's patcher — is kept
and not recorded, so uninstall leaves it. What is added is recorded as JSON undo data: inserted
text is removed again byte for byte; a changed ARGUMENTS value goes back to its old value if
nobody touched it since, else only the items onevita added are taken out of their list.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import ConfigError
from .edits import Change
from .template import Attribute, Template, parse

__all__ = [
    "DS_MAD_CONF",
    "IMAGE_RESTRICTED",
    "INHERIT",
    "LOCAL_ACTIONS",
    "TM_MAD_CONF",
    "VM_RESTRICTED",
    "apply",
    "check",
    "revert",
]

DRIVER = "vitastor"
KVM = "kvm"

# Values from the bash driver's oned.conf.diff (driver contract §9), so a cloud that used the
# bash driver keeps identical datastore behaviour.
TM_MAD_CONF: tuple[tuple[str, str], ...] = (
    ("NAME", DRIVER), ("LN_TARGET", "NONE"), ("CLONE_TARGET", "SELF"), ("SHARED", "YES"),
    ("DS_MIGRATE", "NO"), ("DRIVER", "raw"), ("ALLOW_ORPHANS", "format"),
    ("TM_MAD_SYSTEM", "ssh,shared"), ("LN_TARGET_SSH", "SYSTEM"), ("CLONE_TARGET_SSH", "SYSTEM"),
    ("DISK_TYPE_SSH", "FILE"), ("LN_TARGET_SHARED", "NONE"), ("CLONE_TARGET_SHARED", "SELF"),
    ("DISK_TYPE_SHARED", "FILE"),
)
DS_MAD_CONF: tuple[tuple[str, str], ...] = (
    ("NAME", DRIVER), ("REQUIRED_ATTRS", "DISK_TYPE,BRIDGE_LIST"), ("PERSISTENT_ONLY", "NO"),
    ("MARKETPLACE_ACTIONS", "export"),
)
LOCAL_ACTIONS: tuple[tuple[str, str], ...] = (
    ("deploy", "deploy.vitastor"), ("attach_disk", "attach_disk.vitastor"),
    ("save", "save.vitastor"), ("restore", "restore.vitastor"),
)
INHERIT = ("VITASTOR_CONF", "IMAGE_PREFIX")
VM_RESTRICTED = ("DISK/VITASTOR_CONF", "DISK/POOL_NAME", "DISK/IMAGE_PREFIX")
IMAGE_RESTRICTED = ("VITASTOR_CONF", "POOL_NAME", "IMAGE_PREFIX")

# one_datastore.rb's SYSTEM_DS_TYPES, what it monitors when DATASTORE_MAD has no -s (6.8 .. 7.4).
_DEFAULT_SYSTEM_DS = ["shared", "ssh", "ceph"]


@dataclass(frozen=True)
class _Edit:
    template: Template
    change: Change
    problem: str  # the same fact, said as what is missing (for check)


_Step = Callable[[Template], Optional[_Edit]]


def apply(text: str, *, source: str = "oned.conf") -> tuple[str, list[Change]]:
    """Add what onevita needs to oned.conf ``text``; return the new text and what was changed.

    Idempotent, and pieces someone else already added are left alone and not recorded. Raises
    ConfigError (nothing changed) when the file does not parse, a block to edit is missing or
    ambiguous, or the kvm driver already runs another script for deploy or attach_disk.
    """
    tmpl = parse(text, source)
    changes: list[Change] = []
    for step in _steps(source):
        edit = step(tmpl)
        if edit is not None:
            tmpl = edit.template
            changes.append(edit.change)
    return tmpl.text, changes


def check(text: str, *, source: str = "oned.conf") -> list[str]:
    """What is missing or in the way, one sentence each; [] when oned.conf is ready.

    Never raises for a bad file: a parse error, a missing block or a conflicting ``-l`` entry
    is reported as a sentence.
    """
    try:
        tmpl = parse(text, source)
    except ConfigError as e:
        return [str(e)]
    problems: list[str] = []
    for step in _steps(source):
        try:
            edit = step(tmpl)
        except ConfigError as e:
            problems.append(str(e))
            continue
        if edit is not None:
            problems.append(edit.problem)
    return problems


def revert(text: str, undo: list[dict[str, Any]], *, source: str = "oned.conf") -> str:
    """Undo the recorded changes, newest first. A change already gone is skipped; anything
    onevita did not record is kept."""
    tmpl = parse(text, source)
    for u in reversed(undo):
        op = u.get("op")
        if op == "insert":
            tmpl = _revert_insert(tmpl, u)
        elif op == "arguments":
            tmpl = _revert_arguments(tmpl, u)
        else:
            raise ConfigError(f"{source}: unknown undo record {u!r}")
    return tmpl.text


# ---- the steps ---------------------------------------------------------------------------------

def _steps(source: str) -> list[_Step]:
    steps: list[_Step] = [
        lambda t: _local_actions(t, source),
        lambda t: _driver_list(t, source, "TM_MAD", "-d", "--tm-types", None),
        lambda t: _driver_list(t, source, "DATASTORE_MAD", "-d", "--ds-types", None),
        lambda t: _driver_list(t, source, "DATASTORE_MAD", "-s", "--system-ds-types",
                               _DEFAULT_SYSTEM_DS),
    ]
    for name, values in (("INHERIT_DATASTORE_ATTR", INHERIT), ("VM_RESTRICTED_ATTR", VM_RESTRICTED),
                         ("IMAGE_RESTRICTED_ATTR", IMAGE_RESTRICTED)):
        for value in values:
            steps.append(lambda t, n=name, v=value: _single(t, source, n, v))  # type: ignore[misc]
    steps.append(lambda t: _vector(t, source, "TM_MAD_CONF", TM_MAD_CONF))
    steps.append(lambda t: _vector(t, source, "DS_MAD_CONF", DS_MAD_CONF))
    return steps


def _arguments(tmpl: Template, source: str, name: str, where: dict[str, str]) -> tuple[Attribute, str]:
    what = _describe(name, where)
    vec = tmpl.vector(name, **where)
    if vec is None:
        raise ConfigError(f"{source}: no {what} vector found; onevita cannot enable its driver there")
    pair = vec.pair("ARGUMENTS")
    if pair is None:
        raise ConfigError(f"{source}: line {vec.line}: {what} has no ARGUMENTS; add them by hand")
    return vec, pair.value.text


def _driver_list(tmpl: Template, source: str, name: str, short: str, long: str,
                 default: list[str] | None) -> _Edit | None:
    """Append ``vitastor`` to a comma-separated driver list option of TM_MAD/DATASTORE_MAD.

    Without the option, one_tm and one_datastore enable every installed driver (``-d``), so
    nothing is needed; a missing ``-s`` means the built-in system-DS list, which is written out
    with vitastor appended.
    """
    vec, args = _arguments(tmpl, source, name, {})
    opt = _find_option(args, short, long, optional_value=True)
    created = False
    if opt is None:
        if default is None:
            return None
        listed = ",".join([*default, DRIVER])
        new_args = _add_option(args, short, listed)
        created = True
    else:
        if DRIVER in _entries(args, opt):
            return None
        new_args = _extend_option(args, opt, [DRIVER])
    new = _set_arguments(tmpl, vec, new_args)
    if created:
        summary = (f"{source}: added {short} {listed} to {name} "
                   "ARGUMENTS (oned's default system datastore drivers plus vitastor)")
    else:
        summary = f"{source}: added vitastor to {name} ARGUMENTS {short}"
    undo = {"op": "arguments", "vector": name, "where": {}, "option": short, "long": long,
            "items": [DRIVER], "old": args, "new": new_args, "created": created,
            "default": default or []}
    return _Edit(new, Change(summary, undo),
                 f"{source}: line {vec.line}: {name} ARGUMENTS {short} does not list vitastor")


def _local_actions(tmpl: Template, source: str) -> _Edit | None:
    """Merge the deploy=, attach_disk=, save= and restore= overrides into the kvm VM_MAD's
    ``-l`` list."""
    where = {"NAME": KVM}
    what = _describe("VM_MAD", where)
    vec, args = _arguments(tmpl, source, "VM_MAD", where)
    opt = _find_option(args, "-l", "--local", optional_value=False)
    existing: dict[str, tuple[str, str]] = {}
    for entry in _entries(args, opt) if opt else []:
        action, _, script = entry.partition("=")
        existing.setdefault(action.strip().upper(), (entry, script.strip()))
    missing: list[str] = []
    for action, script in LOCAL_ACTIONS:
        have = existing.get(action.upper())
        if have is None:
            missing.append(f"{action}={script}")
        elif have[1] != script:
            raise ConfigError(
                f"{source}: line {vec.line}: {what} ARGUMENTS already has '-l ... {have[0]}' "
                f"(probably another storage driver's override, e.g. StorPool's deploy-tweaks); "
                f"onevita needs {action}={script}. Merge the two scripts by hand, or remove that "
                "entry, and run the install again")
    if not missing:
        return None
    new_args = _extend_option(args, opt, missing) if opt else _add_option(args, "-l", ",".join(missing))
    new = _set_arguments(tmpl, vec, new_args)
    undo = {"op": "arguments", "vector": "VM_MAD", "where": where, "option": "-l", "long": "--local",
            "items": missing, "old": args, "new": new_args, "created": opt is None, "default": []}
    return _Edit(new, Change(f"{source}: {what} ARGUMENTS: added -l {','.join(missing)}", undo),
                 f"{source}: line {vec.line}: {what} ARGUMENTS -l lacks {','.join(missing)}")


def _single(tmpl: Template, source: str, name: str, value: str) -> _Edit | None:
    """Add ``NAME = "value"`` after the last line of the same name (or at the end of the file)."""
    if tmpl.singles(name, value):
        return None
    same = tmpl.singles(name)
    anchor = same[-1] if same else None
    block = tmpl.render_single(name, value, like=anchor)
    if anchor is None:
        block = "\n" + block
    new, _, inserted = _insert(tmpl, anchor, block)
    undo = {"op": "insert", "attr": name, "value": value, "text": inserted}
    where = f'after {name} = "{anchor.value.text}"' if anchor and anchor.value else "at the end"
    return _Edit(new, Change(f'{source}: added {name} = "{value}" ({where})', undo),
                 f'{source}: {name} = "{value}" is missing')


def _vector(tmpl: Template, source: str, name: str, pairs: tuple[tuple[str, str], ...]) -> _Edit | None:
    """Add the vitastor ``TM_MAD_CONF``/``DS_MAD_CONF`` after the last block of its kind. An
    existing one (e.g. from the bash driver) is left as it is, whatever its values."""
    if tmpl.vectors(name, NAME=DRIVER):
        return None
    same = tmpl.vectors(name)
    anchor = same[-1] if same else None
    block = "\n" + tmpl.render_vector(name, pairs, like=anchor)
    new, _, inserted = _insert(tmpl, anchor, block)
    undo = {"op": "insert", "attr": name, "where": {"NAME": DRIVER}, "text": inserted}
    where = f'after the {name} of "{anchor.get("NAME")}"' if anchor else "at the end"
    return _Edit(new, Change(f"{source}: added {name} for vitastor ({where})", undo),
                 f'{source}: {name} with NAME = "vitastor" is missing')


def _insert(tmpl: Template, anchor: Attribute | None, block: str) -> tuple[Template, int, str]:
    new, at = tmpl.insert_after(anchor, block)
    inserted = new.text[at:at + len(new.text) - len(tmpl.text)]
    return new, at, inserted


def _set_arguments(tmpl: Template, vec: Attribute, args: str) -> Template:
    pair = vec.pair("ARGUMENTS")
    assert pair is not None  # noqa: S101 - _arguments checked it
    return tmpl.with_value(pair.value, args)


def _describe(name: str, where: dict[str, str]) -> str:
    return name + "".join(f" {v}" for v in where.values())


# ---- undo --------------------------------------------------------------------------------------

def _revert_insert(tmpl: Template, u: dict[str, Any]) -> Template:
    name, recorded = str(u["attr"]), str(u["text"])
    if "where" in u:
        found = tmpl.vectors(name, **{str(k): str(v) for k, v in u["where"].items()})
    else:
        found = tmpl.singles(name, str(u["value"]))
    if not found:
        return tmpl  # already gone
    text = tmpl.text
    for attr in reversed(found):  # untouched since install: remove exactly what was inserted
        span = tmpl.line_span(attr)
        if span is not None and text[max(span[1] - len(recorded), 0):span[1]] == recorded:
            return tmpl.replace(span[1] - len(recorded), span[1], "")
    attr = found[-1]  # edited since: remove its lines and the blank line install put before it
    span = tmpl.line_span(attr)
    if span is None:
        return tmpl.remove(attr)
    start, end = span
    if recorded.startswith("\n") and start >= 1 and text[start - 1] == "\n" and (
            start == 1 or text[start - 2] == "\n"):
        start -= 1
    return tmpl.replace(start, end, "")


def _revert_arguments(tmpl: Template, u: dict[str, Any]) -> Template:
    where = {str(k): str(v) for k, v in u.get("where", {}).items()}
    vec = tmpl.vector(str(u["vector"]), **where)
    pair = vec.pair("ARGUMENTS") if vec is not None else None
    if vec is None or pair is None:
        return tmpl
    args = pair.value.text
    if args == u["new"]:
        return tmpl.with_value(pair.value, str(u["old"]))
    short, long = str(u["option"]), str(u["long"])
    opt = _find_option(args, short, long, optional_value=short != "-l")
    if opt is None or opt.value is None:
        return tmpl
    items = {str(i) for i in u["items"]}
    entries = args[opt.value[0]:opt.value[1]].split(",")
    kept = [e for e in entries if e.strip() not in items]
    if len(kept) == len(entries):
        return tmpl
    if not [e for e in kept if e.strip()] or (
            u.get("created") and [e.strip() for e in kept] == list(u.get("default", []))):
        new_args = _drop_option(args, opt)
    else:
        new_args = args[:opt.value[0]] + ",".join(kept) + args[opt.value[1]:]
    return tmpl.with_value(pair.value, new_args)


# ---- driver argument strings -------------------------------------------------------------------
# oned hands ARGUMENTS to the driver's shell wrapper, which splits it on blanks; the Ruby drivers
# read it with GetoptLong. The last occurrence of an option wins. An option with an optional
# argument (-d/-s of one_tm/one_datastore) takes the next word unless it starts with "-"; -l of
# one_vmm_exec requires one and always takes the next word.

@dataclass(frozen=True)
class _Option:
    flag: tuple[int, int]               # the option word (for "-dLIST"/"--x=LIST", the whole word)
    value: tuple[int, int] | None       # the list inside the argument string, if any


def _find_option(args: str, short: str, long: str, *, optional_value: bool) -> _Option | None:
    words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", args)]
    found: _Option | None = None
    i = 0
    while i < len(words):
        start, end, word = words[i]
        if word in (short, long):
            nxt = words[i + 1] if i + 1 < len(words) else None
            if nxt is not None and not (optional_value and nxt[2].startswith("-")):
                found = _Option((start, end), (nxt[0], nxt[1]))
                i += 2
                continue
            found = _Option((start, end), None)
        elif word.startswith(long + "="):
            found = _Option((start, end), (start + len(long) + 1, end))
        elif word.startswith(short) and not word.startswith("--") and len(word) > len(short):
            found = _Option((start, end), (start + len(short), end))
        i += 1
    return found


def _entries(args: str, opt: _Option | None) -> list[str]:
    if opt is None or opt.value is None:
        return []
    return [e.strip() for e in args[opt.value[0]:opt.value[1]].split(",") if e.strip()]


def _extend_option(args: str, opt: _Option, items: list[str]) -> str:
    if opt.value is None:
        return args[:opt.flag[1]] + " " + ",".join(items) + args[opt.flag[1]:]
    start, end = opt.value
    current = args[start:end]
    sep = "" if current.endswith(",") or not current else ","
    return args[:end] + sep + ",".join(items) + args[end:]


def _add_option(args: str, short: str, value: str) -> str:
    body = args.rstrip()
    return (body + " " if body else "") + f"{short} {value}" + args[len(body):]


def _drop_option(args: str, opt: _Option) -> str:
    start, end = opt.flag[0], (opt.value or opt.flag)[1]
    if start > 0:
        while start > 0 and args[start - 1].isspace():
            start -= 1
    else:
        while end < len(args) and args[end].isspace():
            end += 1
    return args[:start] + args[end:]
