"""A search's checkpoint: the finished tasks as append-only JSON lines. No MPI, no pickle.

Layout of the directory:
    search.json                       which search this is (fingerprint, candidates, splits);
                                      written once, atomically
    tasks-<run>-g<group>.jsonl        one line per finished task, appended by the leader of one
                                      rank group of one run (one writer per file)

Each line is written with one ``write`` and fsynced before the group takes its next task, so a
kill at any moment loses at most the tasks in progress; a line cut short by the kill is the
last of its file (a restart writes new files) and is ignored. A restarted search reads every
file, on any rank count or group size, and runs only the tasks not found.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import time

from mpinn.atomic import check_writable_dir, fsync_dir, write_text_atomic
from mpinn.errors import InputError

META = "search.json"


class TaskLog:
    """The checkpoint directory of one search, identified by its fingerprint."""

    def __init__(self, directory, fingerprint):
        self.directory = os.fspath(directory)
        self.fingerprint = fingerprint

    def files(self):
        return sorted(glob.glob(os.path.join(glob.escape(self.directory), "tasks-*.jsonl")))

    def exists(self):
        """True if the directory already holds a search (its description or any task)."""
        return os.path.exists(os.path.join(self.directory, META)) or bool(self.files())

    def prepare(self, description):
        """Rank 0, before any task: create the directory, check it is writable and holds no
        other search, and describe this one in search.json (once)."""
        check_writable_dir(self.directory, "checkpoint")
        meta_path = os.path.join(self.directory, META)
        if os.path.exists(meta_path):
            try:
                with open(meta_path) as fh:
                    stored = json.load(fh).get("fingerprint")
            except (OSError, ValueError) as exc:
                raise InputError(f"checkpoint: {meta_path} is damaged ({exc})") from None
            if stored != self.fingerprint:
                raise InputError(f"checkpoint: {self.directory} holds another search (candidates, folds, scoring, "
                                 "estimator or data differ); use a new directory")
            return
        write_text_atomic(meta_path, json.dumps({"fingerprint": self.fingerprint, **description}, indent=1) + "\n")

    def read(self):
        """{task id: record} of every finished task (the first record of a task wins)."""
        done = {}
        for path in self.files():
            with open(path, "rb") as fh:
                lines = fh.read().split(b"\n")
            for i, raw in enumerate(lines):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except ValueError:
                    if i == len(lines) - 1:  # cut short by a kill: the task is simply not done
                        continue
                    raise InputError(f"checkpoint: {path} line {i + 1} is damaged") from None
                if record.get("search") != self.fingerprint:
                    raise InputError(f"checkpoint: {path} belongs to another search; use a new directory")
                done.setdefault(int(record["task"]), record)
        return done

    def writer(self, run_id, group):
        return _Appender(os.path.join(self.directory, f"tasks-{run_id}-g{group:04d}.jsonl"), self.fingerprint)


def new_run_id():
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


class _Appender:
    """One group leader's file: each task's line written in one call and fsynced."""

    def __init__(self, path, fingerprint):
        self.path, self.fingerprint, self.fd = path, fingerprint, None

    def append(self, task, record):
        line = json.dumps({"search": self.fingerprint, "task": int(task), **record}) + "\n"
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            fsync_dir(os.path.dirname(self.path))  # the file's directory entry survives a crash
        data = line.encode()
        written = os.write(self.fd, data)
        if written != len(data):  # a short write (disk full): the reader drops the cut line
            raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")
        os.fsync(self.fd)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
