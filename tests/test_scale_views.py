"""Views over every task at production size read only what they need, and say when the task list
they start from is incomplete: the sockets view reads the paths of socket files only, the layouts
are made once per kernel, and a partial task list marks the views built on it."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

import kdnb
from kdnb.views.common import Gaps
from kdnb.views.files import OpenFiles

from .conftest import CORPUS
from .test_ui import sample_dumps

DUMPS = list(sample_dumps()) + (sorted(CORPUS.glob("*/vmcore.kdump-zlib")) if CORPUS.is_dir() else [])


def quiet(f):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f()


@pytest.fixture(scope="module", params=DUMPS, ids=lambda p: p.parent.name)
def dump(request):
    d = quiet(lambda: kdnb.open(request.param))
    yield d
    d.close()


def _tables(d) -> list[int]:
    tasks = quiet(lambda: d.tasks)
    k = d.kernel
    off = k.type("struct task_struct").offsetof("files")
    found = []
    for addr in tasks["address"]:
        try:
            files = k.read_u64(int(addr) + off)
        except kdnb.KdnbError:
            continue
        if files and files not in found:
            found.append(files)
    return found


def test_socket_rows_are_the_socket_rows_of_every_file(dump):
    """`only="socket"` gives exactly the socket rows of the whole table, for every files_struct."""
    reader = OpenFiles(dump.kernel)
    compared = 0
    for files in _tables(dump):
        every = quiet(lambda files=files: reader.rows(files, Gaps()))
        sockets = reader.rows(files, Gaps(), only="socket")
        assert sockets == [r for r in every if r["type"] == "socket"]
        compared += len(every)
    assert compared > 0


def test_layouts_are_made_once(dump):
    k = dump.kernel
    a = k.layout("struct file", ["f_flags", "f_mode"])
    assert a is k.layout(k.type("struct file"), ("f_flags", "f_mode"))
    assert a is not k.layout("struct file", ["f_mode", "f_flags"])


def test_sockets_of_a_partial_task_list_are_flagged():
    """On the degraded capture the task walk misses tasks (httpd among them): the sockets view
    must say it is incomplete, not list the remaining sockets as if they were all."""
    folder = CORPUS / "k6.12-hung_task-degraded"
    if not folder.is_dir():
        pytest.skip("corpus not present")
    d = quiet(lambda: kdnb.open(folder / "vmcore.kdump-zlib"))
    tasks = quiet(lambda: d.tasks)
    assert "incomplete" in tasks.attrs["kdnb"]
    assert not (tasks["comm"].astype(str) == "httpd").any()
    s = quiet(lambda: d.sockets)
    assert "the task list is incomplete" in s.attrs["kdnb"]["incomplete"]["problems"][0]
    assert pd.isna(s["pid"]).all()  # only the TIME_WAIT connection nobody holds is left
