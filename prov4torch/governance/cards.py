"""Governance from the metadata datasets ship with: MLCommons Croissant (JSON-LD) and Hugging Face
dataset cards (the YAML front matter of README.md). Each gives ``declared`` rule entries: what to
match (the files it lists, its folder, its name) and the tags it states.

What is read (documented in docs/design-notes.md):

* Croissant: ``license`` (an SPDX id, or a licence URL mapped to one), each ``cr:FileObject``'s
  ``sha256`` and ``contentUrl`` (the files, matched by digest or name), the dataset ``name``,
  ``usageInfo``/ODRL permissions and prohibitions with a purpose constraint, DUO terms for use
  limitations, and ``prov:wasDerivedFrom`` (source datasets);
* a dataset card: ``license``, ``source_datasets``, ``pretty_name``; the card's folder is matched.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# licence URLs -> SPDX ids (the common ones Croissant files use)
LICENSE_URLS = {
    r"creativecommons\.org/licenses/by/(\d\.\d)": "CC-BY-{0}",
    r"creativecommons\.org/licenses/by-sa/(\d\.\d)": "CC-BY-SA-{0}",
    r"creativecommons\.org/licenses/by-nc/(\d\.\d)": "CC-BY-NC-{0}",
    r"creativecommons\.org/licenses/by-nc-sa/(\d\.\d)": "CC-BY-NC-SA-{0}",
    r"creativecommons\.org/licenses/by-nc-nd/(\d\.\d)": "CC-BY-NC-ND-{0}",
    r"creativecommons\.org/licenses/by-nd/(\d\.\d)": "CC-BY-ND-{0}",
    r"creativecommons\.org/publicdomain/zero/1\.0": "CC0-1.0",
    r"apache\.org/licenses/LICENSE-2\.0": "Apache-2.0",
    r"opensource\.org/licenses/MIT": "MIT",
    r"spdx\.org/licenses/([A-Za-z0-9.\-+]+)": "{0}",
}
# Hugging Face card licence keys are lower-case SPDX ids
HF_LICENSES = {"apache-2.0": "Apache-2.0", "mit": "MIT", "cc0-1.0": "CC0-1.0", "bsd-3-clause": "BSD-3-Clause",
               "gpl-3.0": "GPL-3.0", "lgpl-3.0": "LGPL-3.0", "openrail": "LicenseRef-OpenRAIL",
               "odc-by": "ODC-By-1.0", "odbl": "ODbL-1.0", "unknown": None, "other": None}
# GA4GH Data Use Ontology terms -> (consent scope, prohibited purpose)
DUO = {
    "DUO:0000004": (["research", "commercial", "training"], []),  # no restriction
    "DUO:0000042": (["research", "training"], []),  # general research use
    "DUO:0000006": (["research", "training"], []),  # health/medical/biomedical research
    "DUO:0000007": (["research", "training"], []),  # disease-specific research
    "DUO:0000046": ([], ["commercial"]),  # non-commercial use only
    "DUO:0000018": ([], ["commercial"]),  # not for profit, non-commercial use only
}
ODRL_PURPOSES = {"research", "training", "commercial", "non-commercial", "evaluation", "testing", "serving",
                 "inference", "fine-tuning", "benchmarking", "validation"}


def spdx(value: str) -> str | None:
    """An SPDX id for a licence string or URL, or None when it cannot be told."""
    v = value.strip()
    for pattern, template in LICENSE_URLS.items():
        m = re.search(pattern, v, re.IGNORECASE)
        if m:
            return template.format(*m.groups())
    if v.lower() in HF_LICENSES:
        return HF_LICENSES[v.lower()]
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-+]*", v):  # an SPDX id (matched case-insensitively by SPDX)
        return v.upper() if v.lower().startswith("cc-") else v
    return None


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [] if v is None else [v]


def _text(v: Any) -> str | None:
    if isinstance(v, dict):
        v = v.get("@id") or v.get("@value") or v.get("url") or v.get("name")
    return v if isinstance(v, str) and v.strip() else None


DUO_TERM = re.compile(r"DUO[:_](\d{7})", re.IGNORECASE)


def duo_terms(value: Any, depth: int = 0) -> list[str]:
    """Every DUO term named anywhere in a JSON-LD value (``"DUO:0000042"``, ``obo:DUO_0000042``, a
    ``termCode``/``@id``/``code`` member, nested), as ``DUO:nnnnnnn``."""
    if depth > 8:
        return []
    if isinstance(value, str):
        return [f"DUO:{m}" for m in DUO_TERM.findall(value)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in duo_terms(v, depth + 1)]
    if isinstance(value, list):
        return [t for v in value[:1000] for t in duo_terms(v, depth + 1)]
    return []


def _purposes(rule: Any, permitted: bool = True) -> list[str]:
    """The purposes an ODRL permission (or prohibition) constrains to: ODRL/DPV purpose names, or DUO terms
    (mapped to the consent they give, or for a prohibition to what they forbid)."""
    out = []
    for c in _list(rule.get("constraint") or rule.get("odrl:constraint")) if isinstance(rule, dict) else []:
        if isinstance(c, dict) and str(c.get("leftOperand") or c.get("odrl:leftOperand", "")).endswith("purpose"):
            for v in _list(c.get("rightOperand") or c.get("odrl:rightOperand")):
                for term in duo_terms(v):
                    allowed, denied = DUO.get(term, ([], []))
                    out += allowed if permitted else (denied or allowed)
                p = (_text(v) or "").rsplit("/", 1)[-1].rsplit(":", 1)[-1].lower()
                if p in ODRL_PURPOSES:
                    out.append(p)
    return out


def croissant(doc: Any, path: Path) -> list[dict[str, Any]]:
    """Rule entries from a Croissant JSON-LD document."""
    if not isinstance(doc, dict) or not any("croissant" in str(v).lower() for v in
                                            (doc.get("conformsTo"), doc.get("@context"), doc.get("dct:conformsTo"))):
        raise ConfigError(f"{path}: not a Croissant file (no conformsTo/@context naming MLCommons Croissant)")
    tags: dict[str, Any] = {}
    licences = [x for x in (spdx(t) for t in map(_text, _list(doc.get("license"))) if t) if x]
    if licences:
        tags["license"] = sorted(set(licences))
    scope: list[str] = []
    prohibited: list[str] = []
    usage = _list(doc.get("usageInfo")) + _list(doc.get("rai:dataUseCases")) + _list(doc.get("odrl:hasPolicy"))
    for u in usage:
        policy_parts = ("permission", "odrl:permission", "prohibition", "odrl:prohibition")
        terms = duo_terms({k: v for k, v in u.items() if k not in policy_parts} if isinstance(u, dict) else u)
        for term in terms:  # a DUO term however it is written: text, termCode, @id
            allowed, denied = DUO.get(term, ([], []))
            scope += allowed
            prohibited += denied
        if isinstance(u, dict):
            for r in _list(u.get("permission") or u.get("odrl:permission")):
                scope += _purposes(r)
            for r in _list(u.get("prohibition") or u.get("odrl:prohibition")):
                prohibited += _purposes(r, permitted=False)
    if scope:
        tags["consent_scope"] = sorted(set(scope))
    if prohibited:
        tags["prohibited_purpose"] = sorted(set(prohibited))
    sources = [s for s in map(_text, _list(doc.get("prov:wasDerivedFrom")) + _list(doc.get("isBasedOn"))) if s]
    if sources:
        tags["source_dataset"] = sorted(set(sources))
    entries: list[dict[str, Any]] = []
    name = _text(doc.get("name"))
    if name:
        entries.append({"name": name, **tags})
    for f in _list(doc.get("distribution")):
        if not isinstance(f, dict):
            continue
        digest = _text(f.get("sha256"))
        if digest and re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            entries.append({"sha256": digest.lower(), **tags})
        url = _text(f.get("contentUrl"))
        if url and "://" not in url:
            entries.append({"path": url, **tags})
    if not entries:
        raise ConfigError(f"{path}: a Croissant file with nothing to match (no name, no files with sha256 or a "
                          "local contentUrl)")
    return entries


def front_matter(text: str, path: Path) -> dict[str, Any]:
    """The YAML front matter of a dataset card (PyYAML when installed; else the key/list subset cards use)."""
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not m:
        raise ConfigError(f"{path}: no YAML front matter (a dataset card starts with ---)")
    try:
        import yaml

        data = yaml.load(m.group(1), Loader=_no_alias_loader(yaml))  # a SafeLoader without aliases
    except ImportError:
        data = _simple_yaml(m.group(1))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - PyYAML's errors: one line naming the file
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: the front matter is not YAML{at}: {str(problem)[:200]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the front matter is not a mapping of keys")
    return data


MAX_YAML_NODES = 10_000  # nodes a card's front matter may hold (a card has tens)


def _no_alias_loader(yaml: Any) -> Any:
    """PyYAML's SafeLoader refusing aliases (a "billion laughs" card expands aliases exponentially) and
    front matter of more than ``MAX_YAML_NODES`` nodes."""

    class NoAliasLoader(yaml.SafeLoader):  # type: ignore[misc]
        nodes = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise ConfigError("the front matter uses a YAML alias (*name): not allowed in a dataset card")
            NoAliasLoader.nodes += 1
            if NoAliasLoader.nodes > MAX_YAML_NODES:
                raise ConfigError(f"the front matter has more than {MAX_YAML_NODES} nodes")
            return super().compose_node(parent, index)

    return NoAliasLoader


def _simple_yaml(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    key = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith((" ", "-")) and key is not None and line.strip().startswith("- "):
            out.setdefault(key, [])
            if isinstance(out[key], list):
                out[key].append(line.strip()[2:].strip().strip("'\""))
            continue
        k, sep, v = line.partition(":")
        if sep and not line.startswith(" "):
            key = k.strip()
            out[key] = v.strip().strip("'\"") if v.strip() else []
    return out


def hf_card(text: str, path: Path) -> list[dict[str, Any]]:
    """Rule entries from a Hugging Face dataset card: its folder (and its name) get its tags."""
    data = front_matter(text, path)
    tags: dict[str, Any] = {}
    licences = [x for x in (spdx(str(v)) for v in _list(data.get("license"))) if x]
    if licences:
        tags["license"] = sorted(set(licences))
    sources = [str(s) for s in _list(data.get("source_datasets")) if str(s) not in ("original", "")]
    if sources:
        tags["source_dataset"] = sorted(set(sources))
    entries = [{"path": str(path.parent), **tags}]
    name = data.get("pretty_name") or data.get("dataset_name")
    if isinstance(name, str) and name.strip():
        entries.append({"name": name.strip(), **tags})
    return entries
