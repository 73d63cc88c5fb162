"""Read policies/*.yml, validate each against its JSON Schema, cross-check them; all or nothing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from server.policy.engine import (
    ANY,
    FieldSpec,
    PolicySet,
    Purpose,
    RetentionRule,
    RevealReason,
    Rule,
    category_matches,
)
from server.policy.links import check_links

FILES = ("access.yml", "fields.yml", "purposes.yml", "retention.yml")
SUBJECT_ROLE = "customer"  # the data subject acting in the portal; its rules must use scope self

PathItem = str | int


class PolicyError(Exception):
    """An invalid policy: ``policy <file> line <N>: <problem>; <fix>``."""

    def __init__(self, file: str, line: int, problem: str, fix: str) -> None:
        super().__init__(f"policy {file} line {line}: {problem}; {fix}")
        self.file, self.line, self.problem, self.fix = file, line, problem, fix


def _child(node: yaml.Node, step: PathItem) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        return next((value for key, value in node.value if _key(key) == str(step)), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(step, int):
        return node.value[step] if 0 <= step < len(node.value) else None
    return None


def _key(node: yaml.Node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _where(path: Iterable[PathItem]) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return text or "the top level"


@dataclass(frozen=True)
class _Document:
    name: str
    raw: bytes
    data: Any
    node: yaml.Node | None

    def line(self, path: Iterable[PathItem], key: str | None = None) -> int:
        """Line of the deepest node along ``path`` (or of ``key`` in the mapping there)."""
        node = self.node
        if node is None:
            return 1
        for step in path:
            child = _child(node, step)
            if child is None:
                break
            node = child
        if key is not None and isinstance(node, yaml.MappingNode):
            node = next((k for k, _ in node.value if _key(k) == key), node)
        return node.start_mark.line + 1

    def error(self, path: Sequence[PathItem], problem: str, fix: str) -> PolicyError:
        return PolicyError(self.name, self.line(path), problem, fix)


def _parse(directory: Path, name: str) -> _Document:
    path = directory / name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problem = f"cannot read {path} ({exc.strerror})"
        raise PolicyError(name, 1, problem, "create the file") from None
    loader = yaml.SafeLoader(raw)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise PolicyError(name, mark.line + 1 if mark else 1, f"YAML syntax error: {exc.problem}",
                          "check indentation, colons, quotes and brackets here") from None
    except yaml.YAMLError as exc:
        raise PolicyError(name, 1, f"YAML error: {exc}", "save the file as UTF-8 YAML") from None
    finally:
        loader.dispose()
    doc = _Document(name, raw, data, node)
    _check_duplicate_keys(doc)
    return doc


def _check_duplicate_keys(doc: _Document) -> None:
    stack = [doc.node] if doc.node is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: dict[str | None, int] = {}
            for key, value in node.value:
                line = key.start_mark.line + 1
                if _key(key) in seen:
                    raise PolicyError(doc.name, line, f"duplicate key '{_key(key)}'",
                                      f"it is already set on line {seen[_key(key)]}; keep one")
                seen[_key(key)] = line
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _validate(doc: _Document, schema_dir: Path) -> None:
    schema_name = doc.name.removesuffix(".yml") + ".schema.json"
    try:
        schema = json.loads((schema_dir / schema_name).read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
    except (OSError, ValueError, SchemaError) as exc:
        raise PolicyError(doc.name, 1, f"its schema schema/{schema_name} is unusable ({exc})",
                          "restore the schema file") from None
    errors = list(Draft202012Validator(schema).iter_errors(doc.data))
    if errors:
        lines = {id(e): _error_line(doc, e) for e in errors}
        first = min(errors, key=lambda e: (lines[id(e)], [str(p) for p in e.absolute_path]))
        raise PolicyError(doc.name, lines[id(first)], *_explain(first, schema_name))


def _container(data: Any, path: Iterable[PathItem]) -> Any:
    for step in path:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _extra_keys(error: ValidationError) -> list[str]:
    allowed = error.schema.get("properties", {})
    return sorted(str(k) for k in error.instance if k not in allowed)


def _bad_key(error: ValidationError) -> str | None:
    """The offending key, for errors about a key rather than a value (unknown or badly named)."""
    if error.validator == "additionalProperties" and error.schema.get("properties"):
        return _extra_keys(error)[0]
    if "propertyNames" in error.relative_schema_path:
        return str(error.instance)
    return None


def _error_line(doc: _Document, error: ValidationError) -> int:
    return doc.line(error.absolute_path, _bad_key(error))


TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "a text",
              "integer": "a whole number", "number": "a number", "boolean": "true or false",
              "null": "empty"}


def _show(value: Any) -> str:
    text = f"'{value}'" if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _explain(error: ValidationError, schema_name: str) -> tuple[str, str]:
    where = _where(error.absolute_path)
    value, instance, schema = error.validator_value, error.instance, error.schema
    hint = schema.get("description") or f"see policies/schema/{schema_name}"
    if "propertyNames" in error.relative_schema_path:
        return f"bad name '{instance}' in {where}", hint
    if error.validator == "required":
        missing = next(k for k in value if k not in instance)
        choices = schema.get("properties", {}).get(missing, {}).get("enum")
        return (f"missing key '{missing}' in {where}",
                f"add {missing}:" + (f" (one of: {', '.join(choices)})" if choices else ""))
    if error.validator == "additionalProperties" and schema.get("properties"):
        return (f"unknown key '{_extra_keys(error)[0]}' in {where}",
                f"allowed keys: {', '.join(schema['properties'])}")
    if error.validator == "enum":
        hint = "use one of: " + ", ".join(map(str, value))
    if error.validator in ("enum", "const"):
        return f"bad value {_show(instance)} for {where}", hint
    if error.validator == "type":
        wanted = TYPE_WORDS.get(str(value), str(value))
        return f"{where} must be {wanted}, not {_show(instance)}", f"write {wanted} here"
    if error.validator == "oneOf" and all(set(s) == {"required"} for s in value):
        keys = " or ".join(f"'{k}'" for s in value for k in s["required"])
        return f"{where} needs exactly one of {keys}", "keep exactly one of them"
    if error.validator in ("minItems", "minProperties", "minLength"):
        return f"{where} is empty", "fill it in"
    if error.validator == "uniqueItems":
        return f"duplicate item in {where}", "list each item once"
    return f"{where}: {error.message}", hint


def _version(docs: Iterable[_Document]) -> str:
    digest = hashlib.sha256()
    for doc in sorted(docs, key=lambda d: d.name):
        digest.update(doc.name.encode() + b"\0" + len(doc.raw).to_bytes(8, "big") + doc.raw)
    return digest.hexdigest()


def _build_fields(doc: _Document, retention: dict[str, RetentionRule]) -> dict[str, dict[str, FieldSpec]]:
    fields: dict[str, dict[str, FieldSpec]] = {}
    for table, columns in doc.data["tables"].items():
        fields[table] = {}
        for name, spec in columns.items():
            rule = spec.get("retention")
            if rule is not None and rule not in retention:
                raise doc.error(("tables", table, name, "retention"), f"unknown retention rule '{rule}'",
                                f"known rules in retention.yml: {', '.join(retention)}")
            if spec.get("personal", True) and rule is None:
                raise doc.error(("tables", table, name), f"personal field {table}.{name} has no retention rule",
                                "add retention: <rule id from retention.yml>, or personal: false if it is not "
                                "personal data")
            fields[table][name] = FieldSpec(**spec)
    check_links(fields, doc.error)
    return fields


def _build_retention(doc: _Document) -> dict[str, RetentionRule]:
    rules: dict[str, RetentionRule] = {}
    units = {"days": 1, "months": 30, "years": 365}
    for i, r in enumerate(doc.data["rules"]):
        if r["id"] in rules:
            raise doc.error(("rules", i, "id"), f"duplicate retention rule id '{r['id']}'",
                            "give each rule its own id")
        days = sum(units[unit] * amount for unit, amount in r["keep"].items())
        rules[r["id"]] = RetentionRule(r["id"], r["description"], days, r["after"], r["action"])
    return rules


def _build_purposes(doc: _Document) -> dict[str, Purpose]:
    purposes: dict[str, Purpose] = {}
    for i, p in enumerate(doc.data["purposes"]):
        if p["id"] in purposes:
            raise doc.error(("purposes", i, "id"), f"duplicate purpose id '{p['id']}'",
                            "give each purpose its own id")
        purposes[p["id"]] = Purpose(p["id"], p["title"]["de"], p["title"]["en"], p["legal_basis"],
                                    p["consent_required"], p["description"], tuple(p.get("recipients", ())))
    return purposes


def _build_reveal_reasons(doc: _Document) -> dict[str, RevealReason]:
    reasons: dict[str, RevealReason] = {}
    for i, r in enumerate(doc.data.get("reveal_reasons", [])):
        if r["id"] in reasons:
            raise doc.error(("reveal_reasons", i, "id"), f"duplicate reveal reason id '{r['id']}'",
                            "give each reveal reason its own id")
        reasons[r["id"]] = RevealReason(r["id"], r["title"]["de"], r["title"]["en"])
    return reasons


def _check_names(doc: _Document, path: tuple[PathItem, ...], names: list[str], known: Iterable[str],
                 kind: str, wildcard: bool = False) -> None:
    known = list(known)
    for j, name in enumerate(names):
        if wildcard and name == ANY:
            if len(names) > 1:
                raise doc.error((*path, j), f"'{ANY}' in {_where(path)} must stand alone",
                                f"write [\"{ANY}\"] or list the {kind}s")
        elif name not in known:
            raise doc.error((*path, j), f"unknown {kind} '{name}'",
                            f"known {kind}s: {', '.join(known)}")


def _build_rules(doc: _Document, fields: dict[str, dict[str, FieldSpec]],
                 purposes: dict[str, Purpose]) -> tuple[list[str], list[Rule]]:
    roles: list[str] = doc.data["roles"]
    rules: list[Rule] = []
    first_line: dict[str, int] = {}
    for i, r in enumerate(doc.data["rules"]):
        at: tuple[PathItem, ...] = ("rules", i)
        if r["id"] in first_line:
            raise doc.error((*at, "id"), f"duplicate rule id '{r['id']}'",
                            f"it is already used on line {first_line[r['id']]}; rename one")
        first_line[r["id"]] = doc.line((*at, "id"))
        _check_names(doc, (*at, "roles"), r["roles"], roles, "role")
        _check_names(doc, (*at, "purposes"), r["purposes"], purposes, "purpose", wildcard=True)
        _check_names(doc, (*at, "tables"), r["tables"], fields, "table")
        columns = {name: spec for table in r["tables"] for name, spec in fields[table].items()}
        _check_names(doc, (*at, "fields"), r.get("fields", []), columns, "field", wildcard=True)
        known_categories = sorted({spec.category for spec in columns.values()})
        for j, category in enumerate(r.get("categories", [])):
            if not any(category_matches(category, c) for c in known_categories):
                tables = ", ".join(r["tables"])
                raise doc.error((*at, "categories", j), f"unknown category '{category}'",
                                f"categories of {tables}: {', '.join(known_categories)}")
        if SUBJECT_ROLE in r["roles"] and r["scope"] != "self":
            raise doc.error((*at, "scope"), f"rule '{r['id']}' gives role '{SUBJECT_ROLE}' scope "
                            f"'{r['scope']}'", f"{SUBJECT_ROLE} rules must use scope: self")
        rules.append(Rule(
            id=r["id"], roles=frozenset(r["roles"]), actions=frozenset(r["actions"]),
            purposes=frozenset(r["purposes"]), tables=frozenset(r["tables"]),
            fields=frozenset(r.get("fields", ())), categories=tuple(r.get("categories", ())),
            effect=r["effect"], scope=r["scope"], priority=r["priority"],
        ))
    return roles, rules


def load_policies(directory: Path) -> PolicySet:
    """Load and validate ``directory``'s policies; raises PolicyError naming file, line and fix."""
    docs = {name: _parse(directory, name) for name in FILES}
    for doc in docs.values():
        _validate(doc, directory / "schema")
    retention = _build_retention(docs["retention.yml"])
    fields = _build_fields(docs["fields.yml"], retention)
    purposes = _build_purposes(docs["purposes.yml"])
    roles, rules = _build_rules(docs["access.yml"], fields, purposes)
    return PolicySet(version=_version(docs.values()), fields=fields, purposes=purposes,
                     roles=roles, rules=rules, retention=retention,
                     reveal_reasons=_build_reveal_reasons(docs["purposes.yml"]))
