"""The record-at-a-time reader (audit/stream.py) reads what the whole-document reader reads, refuses what it
refuses, at any chunk size, and keeps the commands' memory independent of the file's text."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import CORPUS

from prov4torch.audit import stream
from prov4torch.audit.graph import Graph
from prov4torch.audit.jsonread import ProvInputError, load_document
from prov4torch.audit.load import add_document, add_file
from prov4torch.audit.validate import validate_file, validate_text

DOC = {
    "prefix": {"ex": "http://example.org/", "default": "http://default.org/"},
    "entity": {"ex:e1": {"prov:label": "caf\u00e9 \u2603 \U0001F600", "ex:n": {"$": "12345678901234567890",
                                                                              "type": "xsd:long"}},
               "ex:e2": [{"ex:a": 1}, {"ex:a": 2.5e-3, "ex:b": True}], "plain": {"ex:q": "a\\\"b\n"}},
    "activity": {"ex:a1": {"prov:startTime": "2026-01-01T00:00:00Z", "ex:k": [1, 2, 3]}},
    "used": {"_:u1": {"prov:activity": "ex:a1", "prov:entity": "ex:e1", "ex:role": {"$": "ex:train",
                                                                                  "type": "xsd:QName"}}},
    "wasGeneratedBy": {"_:g1": {"prov:entity": "ex:e2", "prov:activity": "ex:a1"}},
    "bundle": {"ex:b1": {"prefix": {"in": "http://inner.org/"},
                         "entity": {"in:x": {"prov:type": "ex:T"}},
                         "wasDerivedFrom": {"_:d1": {"prov:generatedEntity": "in:x", "prov:usedEntity": "ex:e1"}}}},
}


def snapshot(g: Graph) -> tuple:
    nodes = sorted((n.id, tuple(sorted(n.kinds)), json.dumps(n.attrs, sort_keys=True, default=str), n.label)
                   for n in g.nodes.values())
    edges = sorted((e.relation, e.down, e.up, json.dumps(e.attrs, sort_keys=True, default=str)) for e in g.edges)
    return nodes, edges, sorted(g.prefixes.items()), sorted(g.names.items())


def both(path: Path) -> tuple[tuple | str, tuple | str]:
    """The graph of ``path`` read whole and read streamed (or each one's refusal)."""
    out: list[tuple | str] = []
    for read in (lambda g: add_document(g, load_document(path), str(path)), lambda g: add_file(g, path)):
        g = Graph()
        try:
            read(g)
            out.append(snapshot(g))
        except ProvInputError as exc:
            out.append(f"refused: {exc}")
    return out[0], out[1]


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 22])
@pytest.mark.parametrize("indent", [None, 2])
def test_streamed_and_whole_readers_build_the_same_graph_at_any_chunk_size(tmp_path: Path, chunk: int,
                                                                           indent: int | None,
                                                                           monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(stream, "CHUNK", chunk)  # values, escapes and multi-byte characters cut anywhere
    f = tmp_path / "d.json"
    f.write_text(json.dumps(DOC, indent=indent, ensure_ascii=indent is None), encoding="utf-8")
    whole, streamed = both(f)
    assert isinstance(whole, tuple) and whole == streamed
    ids = {n[0] for n in whole[0]}
    assert {"http://example.org/e1", "http://default.org/plain", "http://inner.org/x"} <= ids


def test_prefixes_declared_after_the_records_still_expand_them(tmp_path: Path):
    late = {k: v for k, v in DOC.items() if k != "prefix"} | {"prefix": DOC["prefix"]}
    late["bundle"] = {"ex:b1": {k: v for k, v in DOC["bundle"]["ex:b1"].items() if k != "prefix"}
                      | {"prefix": DOC["bundle"]["ex:b1"]["prefix"]}}
    f = tmp_path / "late.json"
    f.write_text(json.dumps(late))
    assert list(late)[-1] == "prefix"
    whole, streamed = both(f)
    assert isinstance(streamed, tuple) and whole == streamed
    kinds = [type(i).__name__ for i in stream.items(f)]
    assert kinds.index("Prefix") < kinds.index("Records")  # held back until the prefixes were known


@pytest.mark.parametrize(("text", "says"), [
    ('{"entity": {"ex:e": {"ex:a": 1}', "line 1, column 32"),  # truncated
    ('{"entity": {}} {}', "Extra data"),
    ('{"entity": {"e": {"a": NaN}}}', "NaN is not JSON"),
    ('{"entity": {"e": {"a": 1' + "0" * 4100 + '}}}', "4101 digits"),
    ('{"entity": {"e": {}, "e": {}}}', "appears twice"),
    ('{"entity": {"e": {"a": 1, "a": 2}}}', "appears twice"),
    ('[1, 2]', "a JSON object, found an array"),
    ('', "empty file"),
    ('{"entity": {"e": ' + "[" * 100_000 + "]" * 100_000 + "}}", "nested too deeply"),
    ('{"entity": {"e": {"a": "\u00e9"}}}'.encode("latin-1"), "not UTF-8"),
    ('{"entity": 5}', "must map ids to records"),
    ('{"entity": {"e": 5}}', "must be an object"),
    ('{"bogus": {}}', "not a PROV-JSON record type"),
    ('{"bundle": {"b": {"bundle": {}}}}', "bundles cannot nest"),
    ('{"bundle": {"b": 3}}', "a bundle must be an object"),
    ('{"entity": {"e": {"a": 1}}\n,\n"used": {"u": {"prov:activity": 3}}}', "must be an identifier string"),
])
def test_the_streamed_reader_refuses_what_the_whole_reader_refuses(tmp_path: Path, text: str | bytes, says: str,
                                                                    monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(stream, "CHUNK", 5)
    f = tmp_path / "bad.json"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    whole, streamed = both(f)
    assert isinstance(streamed, str) and says in streamed and str(f) in streamed
    assert isinstance(whole, str)


@pytest.mark.foreign_prov
def test_validate_streamed_reports_what_validate_of_the_whole_text_reports(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(stream, "CHUNK", 11)
    docs = {
        "ok": DOC,
        "bad": {"prefix": {"ex": 5}, "entity": {"nope:e": {"ex:a": {"type": "xsd:int"}, "prov:x": None}},
                "used": {"_:u": {"prov:entity": "ex:e"}}, "mentionOf": {"_:m": {}}, "bogus": 1,
                "bundle": {"ex:b": {"bundle": {}}, "ex:c": 3, "zz:d": {"entity": {"zz:e": {}}}},
                "wasGeneratedBy": [], "activity": {"ex:a": {"prov:startTime": "2026-02-31T00:00:00Z"}}},
    }
    for name, doc in docs.items():
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(doc))
        for lenient in (False, True):
            whole = validate_text(f.read_text(), str(f), lenient)
            streamed = validate_file(f, lenient)
            assert sorted(map(str, streamed.problems)) == sorted(map(str, whole.problems)), (name, lenient)
            assert streamed.valid is whole.valid
    assert validate_file(tmp_path / "ok.json", lenient=True).valid and not validate_file(tmp_path / "bad.json").valid
    dup = tmp_path / "dup.json"
    dup.write_text('{"entity": {"e": {}, "e": {}}}')
    # the streamed reader sees both records of the repeated id (the whole reader only the last): same messages
    assert {p.message for p in validate_file(dup, lenient=True).problems} == \
        {p.message for p in validate_text(dup.read_text(), str(dup), lenient=True).problems}


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/prov-corpus is not beside the checkout")
@pytest.mark.foreign_prov
def test_every_corpus_document_reads_and_validates_the_same_streamed(monkeypatch: pytest.MonkeyPatch):
    """1,124 documents written by other tools: the same graph (or the same refusal) and the same validation."""
    monkeypatch.setattr(stream, "CHUNK", 4096)  # most of these are a few kB: still read in several pieces
    files = sorted(p for p in CORPUS.rglob("*.json") if "schema" not in p.parts)
    assert len(files) > 1000
    for f in files:
        whole, streamed = both(f)
        if isinstance(whole, str):
            assert isinstance(streamed, str), f
        else:
            assert whole == streamed, f
        a, b = validate_text(f.read_bytes().decode("utf-8", "replace"), str(f)), validate_file(f)
        if not any("UTF-8" in p.message for p in b.problems):
            assert sorted(map(str, a.problems)) == sorted(map(str, b.problems)), f


def test_a_large_document_is_validated_and_loaded_in_memory_that_does_not_grow_with_its_text(tmp_path: Path):
    """40 MB of metric-series entities: validating holds only ids (no graph), so its peak stays far below what
    parsing the text whole costs (about 10x the text)."""
    f = tmp_path / "big.json"
    script = textwrap.dedent(f"""
        import json
        with open({str(f)!r}, "w") as fh:
            fh.write('{{"prefix": {{"ex": "http://example.org/"}}, "entity": {{')
            fh.write(",".join(json.dumps(f"ex:s{{i}}") + ":" + json.dumps({{
                "prov:type": {{"$": "ex:Series", "type": "xsd:QName"}}, "ex:count": {{"$": str(i), "type": "xsd:int"}},
                "ex:min": {{"$": "0.125", "type": "xsd:double"}}, "ex:name": "loss/" + "x" * 120}})
                for i in range(200_000)))
            fh.write("}}}}")
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    size = f.stat().st_size
    assert size > 40e6
    peak = textwrap.dedent(f"""
        import resource, sys
        from prov4torch.audit.validate import validate_file
        r = validate_file({str(f)!r})
        assert r.valid, r.problems[:3]
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    """)
    base = textwrap.dedent("""
        import resource
        import prov4torch.audit.validate
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    """)
    used = [int(subprocess.run([sys.executable, "-c", s], capture_output=True, text=True, check=True).stdout)
            for s in (base, peak)]
    assert used[1] - used[0] < size  # the whole-text reader needs the text plus ~10x it in objects


TRICKY_VALUES = ['"a:b"', '": "', '":"', '"\\":\\""', '"x\\\\"', '"caf\u00e9: \u2603"', '{"$": "ex:T", "type": "xsd:QName"}',
                 '[{"$": "1", "type": "xsd:int"}, ":", {"$": ":", "type": "xsd:string"}]', '{"$": {"k": ":"}}',
                 '1e400', '-0.0', '[]', '{"$": ""}', 'true']


@pytest.mark.parametrize("escapes", [False, True])
@pytest.mark.parametrize("repeat", [
    None, '{"ex:a": 1, "ex:a": 2}', '{"ex:a": "x:y", "ex:a": ": "}', '{"ex:t": {"$": "1", "$": "2"}}',
    '{"ex:t": [{"$": ":", "type": "xsd:string", "type": "xsd:QName"}]}', '{"ex:q": "\\"", "ex:q": 1}',
    '{"ex:t": {"$": {"k": 1, "k": 2}}}'])
def test_records_read_in_batches_keep_every_repeated_key_refused(tmp_path: Path, repeat: str | None,
                                                                  escapes: bool):
    """The fast path decodes thousands of records at a time without a Python call per object and counts their
    members to find a repeated key: values with colons, quotes, escapes and nesting neither hide a repeated key
    nor invent one, wherever in a batch the record stands (batches with and without escapes are counted
    differently)."""
    values = [v for v in TRICKY_VALUES if escapes or "\\" not in v]
    records = [f'"ex:e{i}": {{"ex:v": {values[i % len(values)]}, "ex:i": {i}}}' for i in range(3 * stream.BATCH)]
    if repeat is not None:
        records[stream.BATCH + 17] = f'"ex:bad": {repeat}'
    f = tmp_path / "doc.json"
    f.write_text('{"prefix": {"ex": "http://example.org/"}, "entity": {' + ",\n ".join(records) + "}}")
    whole, streamed = both(f)
    if repeat is None:
        assert whole == streamed and not isinstance(streamed, str)
    else:
        assert isinstance(whole, str) and isinstance(streamed, str) and "appears twice" in streamed, streamed
    found = sorted(map(str, validate_file(f).problems))
    assert found == sorted(map(str, validate_text(f.read_text(), str(f)).problems))
    assert any("appears twice" in p for p in found) is (repeat is not None)


def test_a_file_read_is_freed_without_the_cycle_collector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Commands pause the cycle collector while they read (thousands of rank files for a merge): a file's reader
    and its text window must be freed by reference counting alone, not kept by a cycle until the end."""
    import gc
    import weakref

    f = tmp_path / "doc.json"
    f.write_text(json.dumps(DOC))
    made: list[weakref.ref] = []
    init = stream._Text.__init__

    def tracked(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(weakref.ref(self))

    monkeypatch.setattr(stream._Text, "__init__", tracked)
    gc.disable()
    try:
        for _ in range(3):
            assert any(isinstance(i, stream.Records) for i in stream.items(f))
        g = Graph()
        add_file(g, f)
        assert len(made) == 4 and [r() for r in made] == [None] * 4
    finally:
        gc.enable()


def _read_with_stderr_on_a_terminal(args: list[str]) -> tuple[int, bytes, bytes]:
    import os
    import pty

    main, sub = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "prov4torch_cli.app", *args], stdout=subprocess.PIPE,
                            stderr=sub)
    os.close(sub)
    err = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        err += chunk
    out, _ = proc.communicate(timeout=120)  # (a summary: far less than a pipe holds)
    os.close(main)
    return proc.returncode, out, err


def test_a_long_read_shows_progress_on_a_terminal_and_nothing_on_a_pipe(tmp_path: Path):
    doc = tmp_path / "store.json"
    subprocess.run([sys.executable, str(Path(__file__).parent.parent / "benchmarks" / "gen_finetune_doc.py"), str(doc),
                    "--runs", "4000"], check=True, capture_output=True)
    assert doc.stat().st_size > 32 << 20  # past the size worth a line
    code, out, err = _read_with_stderr_on_a_terminal(["show", str(doc)])
    assert code == 0 and b"runs" in out.lower()
    assert b"reading store.json: " in err and b"(100%)" in err and err.endswith(b"\r\x1b[K")  # cleared at the end
    piped = subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "show", str(doc)], capture_output=True)
    assert piped.returncode == 0 and b"reading" not in piped.stderr and piped.stdout == out.replace(b"\r\n", b"\n")
