#!/usr/bin/python3
"""Runs a command under a container seccomp profile (the Docker/OCI JSON format), the way a
container runtime would: the filter is installed, then the command is exec'd. Used to check
contrib/seccomp/herald.json on a host without a container engine.

Usage: contrib/seccomp/run.py PROFILE.json [--without NAME,...] [--root DIR] [--user UID:GID]
                              [--no-new-privileges] -- COMMAND [ARG...]
  --without  drop these calls from the profile's allow-list (e.g. the io_uring calls, to see
             what Docker's default does to herald)
  --root     chroot into DIR first (the container's root file system)
  --user     then take this user and group, with no supplementary groups (the image's USER)
  --no-new-privileges
             the order runc takes with no-new-privileges set: the filter last, after the
             user is taken. Without it (Docker's and Kubernetes' default) runc installs the
             filter first, then takes the user (setgroups, setresgid, setresuid) and the
             working directory under it, then execs: the profile must allow those.

Understands defaultAction (SCMP_ACT_ERRNO/ALLOW/KILL*), defaultErrnoRet, and syscall
entries with names and SCMP_ACT_ALLOW or SCMP_ACT_ERRNO (errnoRet). Argument conditions are
refused rather than ignored, so a profile that uses them is never checked as something else.
Needs Debian's python3-seccomp (run with /usr/bin/python3).
"""
import json
import os
import sys

import seccomp

args = sys.argv[1:]
if len(args) < 3 or "--" not in args:
    sys.exit(__doc__)
split = args.index("--")
opts, command = args[:split], args[split + 1:]
profile_path, opts = opts[0], opts[1:]
without, root, user, nnp = set(), None, None, False
while opts:
    if opts[0] == "--no-new-privileges":
        nnp, opts = True, opts[1:]
        continue
    if len(opts) < 2 or opts[0] not in ("--without", "--root", "--user"):
        sys.exit(__doc__)
    if opts[0] == "--without":
        without = set(opts[1].split(","))
    elif opts[0] == "--root":
        root = opts[1]
    else:
        user = tuple(int(x) for x in opts[1].split(":"))
    opts = opts[2:]

profile = json.load(open(profile_path))


def action(name, errno):
    if name == "SCMP_ACT_ALLOW":
        return seccomp.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return seccomp.ERRNO(errno)
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return seccomp.KILL
    if name == "SCMP_ACT_KILL_PROCESS":
        return seccomp.KILL_PROCESS
    sys.exit(f"run.py: action {name} is not supported")


default_errno = profile.get("defaultErrnoRet", 1)
f = seccomp.SyscallFilter(defaction=action(profile["defaultAction"], default_errno))
for entry in profile.get("syscalls", []):
    if entry.get("args") or entry.get("includes") or entry.get("excludes"):
        sys.exit(f"run.py: conditional entries are not supported: {entry}")
    act = action(entry["action"], entry.get("errnoRet", default_errno))
    for name in entry["names"]:
        if name in without:
            continue
        try:
            f.add_rule(act, name)
        except (RuntimeError, ValueError) as e:
            sys.exit(f"run.py: {name}: {e}")
def take_user():
    if user:
        os.setgroups([])
        os.setresgid(user[1], user[1], user[1])
        os.setresuid(user[0], user[0], user[0])
    os.chdir("/")


if root:
    os.chroot(root)
if nnp:
    take_user()
    f.load()
else:
    f.load()
    take_user()
os.execv(command[0], command)
