"""Terraform files (HCL, read with python-hcl2) holding `aws_codepipeline` resources: the references
(`var.x`, `local.x`, resource attributes) evaluated with what the file itself says, and the pipeline read
into the common mapper's shape."""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any

import hcl2
from lark.exceptions import UnexpectedInput

from conveyor.spec.importing.mapper import PipelineSource, ProjectSource, map_pipeline
from conveyor.spec.importing.report import ImportedPipeline
from conveyor.spec.importing.values import Book, Unresolved

PIPELINE_TYPE = "aws_codepipeline"
PROJECT_TYPE = "aws_codebuild_project"
OPTIONS = hcl2.SerializationOptions(
    with_comments=False, explicit_blocks=False, preserve_heredocs=True, strip_string_quotes=True
)
# Heredocs are kept as written (python-hcl2's own unwrapping leaves quotes escaped) and unwrapped here.
HEREDOC = re.compile(r"^<<(-?)([A-Za-z_][A-Za-z0-9_]*)\n(.*?)\n?[ \t]*\2$", re.DOTALL)
NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
VARIABLE = re.compile(rf"^var\.({NAME})$")
LOCAL = re.compile(rf"^local\.({NAME})$")
DATA = re.compile(rf"^data\.({NAME})\.({NAME})\.({NAME})$")
MODULE = re.compile(rf"^module\.({NAME})\.({NAME})$")
RESOURCE = re.compile(rf"^({NAME})\.({NAME})\.({NAME})$")
JSONENCODE = re.compile(r"^jsonencode\((.*)\)$", re.DOTALL)
# Meta-arguments that make one block many: a person must decide what the pipeline is.
MULTIPLYING = ("count", "for_each")
ACTION_TYPE_KEYS = ("category", "owner", "provider", "version")


class TerraformSyntaxError(ValueError):
    """HCL that does not parse; the message names the line and column."""


def parse(text: str) -> dict[str, Any]:
    try:
        parsed: dict[str, Any] = hcl2.loads(text, serialization_options=OPTIONS)
        return parsed
    except UnexpectedInput as exc:
        found = str(getattr(exc, "token", None) or getattr(exc, "char", None) or "").strip()
        what = f"unexpected '{found[:40]}'" if found else "unexpected end of line"
        raise TerraformSyntaxError(f"line {exc.line}, column {exc.column}: invalid HCL: {what}") from None


def has_pipelines(data: dict[str, Any]) -> bool:
    return any(PIPELINE_TYPE in block for block in data.get("resource") or [])


class ModuleResolver:
    """Terraform's references and the functions a pipeline commonly uses (jsonencode), evaluated with the
    variables' defaults, the locals and the resources of the file."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.variables: dict[str, Any] = {}
        for block in data.get("variable") or []:
            for name, body in block.items():
                self.variables[name] = body or {}
        self.locals: dict[str, Any] = {}
        for block in data.get("locals") or []:
            self.locals.update(block)
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        for block in data.get("resource") or []:
            for kind, named in block.items():
                for name, body in named.items():
                    self.resources[(kind, name)] = body
        self._evaluating: set[str] = set()

    def is_expression(self, raw: Any) -> bool:
        return isinstance(raw, str) and "${" in raw.replace("$${", "")

    def resolve(self, raw: Any, path: str, book: Book, *, static: bool = False) -> Any:
        if isinstance(raw, str):
            return self._template(raw, path, book, static)
        if isinstance(raw, dict):
            return {key: self.resolve(value, f"{path}.{key}", book, static=static) for key, value in raw.items()}
        if isinstance(raw, list):
            return [self.resolve(value, f"{path}[{i}]", book, static=static) for i, value in enumerate(raw)]
        return raw

    def _template(self, text: str, path: str, book: Book, static: bool) -> Any:
        if match := HEREDOC.match(text):
            body = match.group(3) + "\n"
            text = textwrap.dedent(body) if match.group(1) else body
        parts = _split_template(text)
        if len(parts) == 1 and parts[0][0]:
            return self._expression(parts[0][1], path, book, static)
        out = []
        for is_expression, part in parts:
            value = self._expression(part, path, book, static) if is_expression else part
            out.append(_text(value))
        return "".join(out)

    def _expression(self, expression: str, path: str, book: Book, static: bool) -> Any:
        expression = expression.strip()
        if match := VARIABLE.match(expression):
            default = self.variables.get(match.group(1), {}).get("default")
            return book.stand_in(
                Unresolved(expression, match.group(1), None if default is None else _text(default)), path, static=static
            )
        if match := LOCAL.match(expression):
            name = match.group(1)
            if name in self.locals and name not in self._evaluating:
                self._evaluating.add(name)
                try:
                    return self.resolve(self.locals[name], path, book, static=static)
                finally:
                    self._evaluating.discard(name)
            book.attention(path, f"{expression}: no such local (or it refers to itself)")
            return book.stand_in(Unresolved(expression, name), path, static=static)
        if match := JSONENCODE.match(expression):
            try:
                argument = hcl2.loads(f"value = {match.group(1)}\n", serialization_options=OPTIONS)["value"]
            except UnexpectedInput:
                argument = None
            if argument is not None:
                return json.dumps(self.resolve(argument, path, book, static=static))
        if match := DATA.match(expression):
            return book.stand_in(Unresolved(expression, f"{match.group(2)}_{match.group(3)}"), path, static=static)
        if match := MODULE.match(expression):
            return book.stand_in(Unresolved(expression, f"{match.group(1)}_{match.group(2)}"), path, static=static)
        if match := RESOURCE.match(expression):
            return self._attribute(expression, match.group(1), match.group(2), match.group(3), path, book, static)
        if expression.startswith(("each.", "count.")):
            attention = f"{expression}: count/for_each: one pipeline per instance in Terraform; choose the values"
        else:
            attention = f"{expression}: an expression conveyor import does not evaluate: became a variable; check it"
        unresolved = Unresolved(expression, path.rsplit(".", 1)[-1], attention=attention)
        if static:
            raise unresolved
        return book.stand_in(unresolved, path, static=False)

    def _attribute(
        self, expression: str, kind: str, name: str, attribute: str, path: str, book: Book, static: bool
    ) -> Any:
        """A resource's attribute: its value when the file gives it literally (a project's name, a bucket's
        `bucket`), else a variable; a CodeBuild project's `id` is its name as CodePipeline takes it."""
        body = self.resources.get((kind, name))
        if body is not None and kind == PROJECT_TYPE and attribute == "id":
            attribute = "name"
        if body is not None and attribute in body and not isinstance(body[attribute], list | dict):
            try:
                return self.resolve(body[attribute], path, book, static=True)
            except Unresolved:
                pass
        default = name if body is not None and kind == PROJECT_TYPE and attribute == "name" else None
        return book.stand_in(Unresolved(expression, f"{name}_{attribute}", default), path, static=static)


def _split_template(text: str) -> list[tuple[bool, str]]:
    """A string template as (is an expression, text) parts: `a-${var.x}` -> [(False, "a-"), (True, "var.x")]."""
    parts: list[tuple[bool, str]] = []
    literal, i = "", 0
    while i < len(text):
        if text.startswith("$${", i):
            literal, i = literal + "${", i + 3
        elif text.startswith("${", i):
            depth, j, quoted = 1, i + 2, False
            while j < len(text) and depth:
                char = text[j]
                if char == '"' and text[j - 1] != "\\":
                    quoted = not quoted
                elif not quoted and char in "{[(":
                    depth += 1
                elif not quoted and char in "}])":
                    depth -= 1
                j += 1
            if literal:
                parts.append((False, literal))
                literal = ""
            parts.append((True, text[i + 2 : j - 1]))
            i = j
        else:
            literal, i = literal + text[i], i + 1
    if literal or not parts:
        parts.append((False, literal))
    return parts


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def import_module(data: dict[str, Any]) -> list[ImportedPipeline]:
    """Every `aws_codepipeline` resource of the file, mapped."""
    resolver = ModuleResolver(data)
    projects = [_project(name, body) for (kind, name), body in resolver.resources.items() if kind == PROJECT_TYPE]
    imported = []
    for (kind, name), body in resolver.resources.items():
        if kind != PIPELINE_TYPE:
            continue
        address = f"{kind}.{name}"
        source = PipelineSource(address, {})
        source.fields = _pipeline_fields(body, address, source.book)
        imported.append(map_pipeline(source, resolver, projects))
    return imported


def _project(name: str, body: dict[str, Any]) -> ProjectSource:
    source = _first(body.get("source"))
    environment = _first(body.get("environment"))
    variables = [
        (entry.get("name"), entry.get("value"), entry.get("type"))
        for entry in environment.get("environment_variable") or []
    ]
    return ProjectSource(
        f"{PROJECT_TYPE}.{name}",
        body.get("name", name),
        buildspec=source.get("buildspec"),
        image=environment.get("image"),
        environment=variables,
    )


def _first(blocks: Any) -> dict[str, Any]:
    return blocks[0] if isinstance(blocks, list) and blocks and isinstance(blocks[0], dict) else {}


def _pipeline_fields(body: dict[str, Any], address: str, book: Book) -> dict[str, Any]:
    for key in MULTIPLYING:
        if key in body:
            book.attention(f"{address}.{key}", f"{key}: Terraform makes several pipelines of it; imported once")
    fields: dict[str, Any] = {}
    for key in ("name", "role_arn", "pipeline_type", "execution_mode"):
        if key in body:
            fields[camel_key(key)] = body[key]
    stores = body.get("artifact_store") or []
    if len(stores) == 1 and "region" not in stores[0]:
        fields["artifactStore"] = _store(stores[0])
    elif stores:
        fields["artifactStores"] = {str(store.get("region")): _store(store) for store in stores}
    fields["variables"] = [camel(v) for v in body.get("variable") or []]
    fields["triggers"] = [_trigger(t) for t in body.get("trigger") or []]
    fields["stages"] = []
    for si, stage in enumerate(body.get("stage") or []):
        where = f"{address}.stage[{si}]"
        _dynamic(stage, where, book)
        out: dict[str, Any] = {"name": stage.get("name"), "actions": []}
        for key in ("on_failure", "on_success", "before_entry"):
            if key in stage:
                out[camel_key(key)] = _conditions(_first(stage[key]))
        for ai, action in enumerate(stage.get("action") or []):
            _dynamic(action, f"{where}.action[{ai}]", book)
            out["actions"].append(_action(action))
        fields["stages"].append(out)
    _dynamic(body, address, book)
    for key in sorted(set(body) - PIPELINE_KEYS):
        book.attention(f"{address}.{key}", "not mapped: no counterpart in Conveyor's declaration")
    return fields


PIPELINE_KEYS = {
    "name",
    "role_arn",
    "pipeline_type",
    "execution_mode",
    "artifact_store",
    "variable",
    "trigger",
    "stage",
    "tags",
    "tags_all",
    "count",
    "for_each",
    "dynamic",
    "depends_on",
    "provider",
    "lifecycle",
}


def _dynamic(body: dict[str, Any], where: str, book: Book) -> None:
    for block in body.get("dynamic") or []:
        for name in block if isinstance(block, dict) else []:
            book.attention(f"{where}.dynamic.{name}", "a dynamic block: write its blocks out; not imported")


def _store(store: dict[str, Any]) -> dict[str, Any]:
    out = {key: value for key, value in store.items() if key in ("location", "type")}
    key = _first(store.get("encryption_key"))
    if key:
        out["encryptionKey"] = {"id": key.get("id"), "type": key.get("type")}
    return out


def _action(action: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in action.items():
        if key == "configuration":
            out["configuration"] = value  # its keys are the provider's own: kept as written
        elif key != "dynamic":
            out[camel_key(key)] = value
    return out


def _conditions(block: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in block.items():
        if key == "condition":
            out["conditions"] = [
                {
                    **({"result": c["result"]} if "result" in c else {}),
                    "rules": [_rule(r) for r in c.get("rule") or []],
                }
                for c in value
            ]
        elif key == "retry_configuration":
            out["retryConfiguration"] = camel(_first(value))
        else:
            out[camel_key(key)] = value
    return out


def _rule(rule: dict[str, Any]) -> dict[str, Any]:
    out = {camel_key(k): v for k, v in rule.items() if k not in ("rule_type_id", "configuration")}
    out["ruleTypeId"] = camel(_first(rule.get("rule_type_id")))
    if "configuration" in rule:
        out["configuration"] = rule["configuration"]
    return out


def _trigger(trigger: dict[str, Any]) -> dict[str, Any]:
    git = _first(trigger.get("git_configuration"))
    out: dict[str, Any] = {"sourceActionName": git.get("source_action_name")}
    for key in ("push", "pull_request"):
        if key in git:
            out[camel_key(key)] = [
                {camel_key(k): (camel(_first(v)) if k != "events" else v) for k, v in f.items()} for f in git[key]
            ]
    return {"providerType": trigger.get("provider_type"), "gitConfiguration": out}


def camel_key(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def camel(value: Any) -> Any:
    if isinstance(value, dict):
        return {camel_key(str(k)): camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel(v) for v in value]
    return value
