"""The common mapper: a pipeline as a format read it (CodePipeline's fields in camelCase, values still the
template's expressions) into Conveyor's declaration, in the order a person writes it, with the report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from conveyor.spec.importing.report import ImportedPipeline, ReportKind
from conveyor.spec.importing.values import NO_VALUE, Book, Resolver, Unresolved
from conveyor.spec.validation import MASKED_SECRET, SECRET_KEYS, validate_declaration

CODEBUILD = "CodeBuild"
# The order a person writes an action's fields in.
ACTION_FIELDS = (
    "runOrder",
    "namespace",
    "region",
    "roleArn",
    "configuration",
    "commands",
    "environmentVariables",
    "inputArtifacts",
    "outputArtifacts",
    "outputVariables",
    "timeoutInMinutes",
)
CONDITION_FIELDS = ("onFailure", "onSuccess", "beforeEntry")


@dataclass
class ProjectSource:
    """A CodeBuild project defined beside the pipeline."""

    address: str  # "BuildProject", "aws_codebuild_project.build"
    name: Any  # the expression its name resolves from (what an action's ProjectName is compared with)
    buildspec: Any = None
    image: Any = None
    environment: list[tuple[Any, Any, Any]] = field(default_factory=list)  # (name, value, type)


@dataclass
class PipelineSource:
    """A pipeline as its format read it: `fields` holds CodePipeline's field names (camelCase) with the
    template's raw values; `stages[].actions[]` use `category`, `owner`, `provider`, `version` flat and
    artifact names as plain lists."""

    address: str
    fields: dict[str, Any]
    book: Book = field(default_factory=Book)


def map_pipeline(source: PipelineSource, resolver: Resolver, projects: list[ProjectSource]) -> ImportedPipeline:
    mapping = _Mapping(source, resolver, projects)
    declaration = mapping.pipeline()
    for issue in validate_declaration(declaration).errors:
        mapping.book.attention(f"{source.address} (declaration) {issue.path}", f"conveyor validate: {issue.message}")
    return ImportedPipeline(str(declaration["name"]), source.address, declaration, mapping.book.lines)


class _Mapping:
    def __init__(self, source: PipelineSource, resolver: Resolver, projects: list[ProjectSource]) -> None:
        self.source = source
        self.resolver = resolver
        self.book = source.book
        self.projects = projects

    def at(self, path: str) -> str:
        return f"{self.source.address}.{path}" if path else self.source.address

    def static(self, raw: Any, path: str, fallback: Any = None) -> Any:
        """A value that cannot be a variable: its default when it has one, else `fallback` (noted)."""
        try:
            return self.resolver.resolve(raw, self.at(path), self.book, static=True)
        except Unresolved as unresolved:
            if fallback is None:
                self.book.attention(
                    self.at(path), f"{unresolved.origin} has no value before the pipeline runs: left out; set it"
                )
            else:
                self.book.attention(
                    self.at(path), f"{unresolved.origin} has no value before the pipeline runs: used '{fallback}'"
                )
            return fallback

    def text(self, raw: Any, path: str) -> Any:
        """A value where CodePipeline resolves variables, as CodePipeline's string."""
        value = self.resolver.resolve(raw, self.at(path), self.book)
        return value if value is NO_VALUE else as_string(value)

    def pipeline(self) -> dict[str, Any]:
        fields = self.source.fields
        fallback_name = self.source.address.rsplit(".", 1)[-1]
        out: dict[str, Any] = {"name": str(self.static(fields.get("name"), "name", fallback_name) or fallback_name)}
        for key in ("pipelineType", "executionMode", "roleArn"):
            value = self.static(fields.get(key), key)
            if value not in (None, NO_VALUE):
                out[key] = as_string(value)
        store = self.artifact_store(fields.get("artifactStore"), "artifactStore")
        if store:
            out["artifactStore"] = store
        stores = {}
        for region, raw in (fields.get("artifactStores") or {}).items():
            region_store = self.artifact_store(raw, f"artifactStores.{region}")
            if region_store:
                stores[region] = region_store
        if stores:
            out["artifactStores"] = stores
        variables = [self.declared_variable(v, f"variables[{i}]") for i, v in enumerate(fields.get("variables") or [])]
        if fields.get("triggers"):
            triggers = self.static(fields["triggers"], "triggers")
            if triggers:
                out["triggers"] = triggers
        out["stages"] = [self.stage(s, f"stages[{i}]") for i, s in enumerate(fields.get("stages") or [])]
        # Variables last: the stages declare the ones their expressions became.
        declared = {v["name"] for v in variables}
        for variable in self.book.variables.values():
            if variable.name not in declared:
                entry: dict[str, Any] = {"name": variable.name}
                if variable.default is not None:
                    entry["defaultValue"] = variable.default
                entry["description"] = f"imported from {variable.origin}"
                variables.append(entry)
        if variables:
            out = _insert_before(out, "stages", "variables", variables)
        return out

    def artifact_store(self, raw: Any, path: str) -> dict[str, Any] | None:
        if not raw:
            return None
        store = self.static(raw, path)
        if not isinstance(store, dict) or not store.get("location"):
            return None
        return {key: value for key, value in store.items() if value not in (None, NO_VALUE)}

    def declared_variable(self, raw: dict[str, Any], path: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": str(self.static(raw.get("name"), f"{path}.name", "Variable"))}
        for key in ("defaultValue", "description"):
            value = None if raw.get(key) is None else self.static(raw[key], f"{path}.{key}")
            if value not in (None, NO_VALUE):
                entry[key] = as_string(value)
        return entry

    def stage(self, raw: dict[str, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": str(self.static(raw.get("name"), f"{path}.name", f"Stage{path[7:-1]}"))}
        out["actions"] = [self.action(a, f"{path}.actions[{i}]", out["name"]) for i, a in enumerate(raw["actions"])]
        for key in sorted(set(raw) - {"name", "actions", *CONDITION_FIELDS, "blockers"}):
            self.book.attention(self.at(f"{path}.{key}"), "not a stage field Conveyor knows: left out")
        for key in (*CONDITION_FIELDS, "blockers"):
            if raw.get(key):
                value = self.static(raw[key], f"{path}.{key}")
                if value:
                    out[key] = value
        return out

    def action(self, raw: dict[str, Any], path: str, stage_name: str) -> dict[str, Any]:
        name = str(self.static(raw.get("name"), f"{path}.name", f"Action{path.rsplit('[', 1)[-1][:-1]}"))
        type_id = {
            key: as_string(self.static(raw.get(key), f"{path}.{key}", default))
            for key, default in (("category", "Build"), ("owner", "AWS"), ("provider", "Unknown"), ("version", "1"))
        }
        out: dict[str, Any] = {"name": name, "actionTypeId": type_id}
        for key in sorted(set(raw) - {"name", *type_id, *ACTION_FIELDS}):
            self.book.attention(self.at(f"{path}.{key}"), "not an action field Conveyor knows: left out")
        for key in ACTION_FIELDS:
            if raw.get(key) is None:
                continue
            value = self.action_field(key, raw[key], f"{path}.{key}")
            if value not in (None, NO_VALUE, [], {}):
                out[key] = value
        if type_id["provider"] == CODEBUILD:
            self.carry_buildspec(out, path)
        self.book.note(
            ReportKind.MAPPED, self.at(path), f"{stage_name}/{name}: {type_id['provider']} ({type_id['category']})"
        )
        return out

    def action_field(self, key: str, raw: Any, path: str) -> Any:
        if key == "configuration":
            return self.configuration(raw, path)
        if key in ("inputArtifacts", "outputArtifacts"):
            names = self.static(raw, path) or []
            return [{"name": as_string(n)} for n in names if n not in (None, NO_VALUE)]
        if key == "environmentVariables":
            return [self.environment_variable(e, f"{path}[{i}]") for i, e in enumerate(raw)]
        if key in ("runOrder", "timeoutInMinutes"):
            value = self.static(raw, path)
            return int(value) if isinstance(value, int | str) and str(value).isdigit() else None
        if key in ("commands", "outputVariables"):
            return [self.text(item, f"{path}[{i}]") for i, item in enumerate(raw)]
        value = self.static(raw, path)
        return None if value in (None, NO_VALUE) else as_string(value)

    def environment_variable(self, raw: dict[str, Any], path: str) -> dict[str, Any]:
        out = {"name": as_string(self.static(raw.get("name"), f"{path}.name", "VARIABLE"))}
        out["value"] = self.text(raw.get("value", ""), f"{path}.value")
        if raw.get("type"):
            out["type"] = as_string(self.static(raw["type"], f"{path}.type", "PLAINTEXT"))
        return out

    def configuration(self, raw: Any, path: str) -> dict[str, str]:
        if not isinstance(raw, dict):
            self.book.attention(self.at(path), "the configuration is not a mapping: left out")
            return {}
        out: dict[str, str] = {}
        for key, value in raw.items():
            where = f"{path}.{key}"
            text = self.secret(value, where) if key in SECRET_KEYS else self.text(value, where)
            if text is not NO_VALUE:
                out[str(key)] = text
        return out

    def secret(self, raw: Any, path: str) -> str:
        """A credential is never carried into the declaration (it would be recorded in every execution):
        a `{{resolve:...}}` reference stays, anything else becomes get-pipeline's `****`."""
        try:
            value = self.resolver.resolve(raw, self.at(path), self.book, static=True)
        except Unresolved:
            value = None
        if isinstance(value, str) and (value == MASKED_SECRET or value.startswith("{{resolve:")):
            if value != MASKED_SECRET:
                self.book.attention(
                    self.at(path),
                    "a {{resolve:...}} secret reference: the worker resolves credentials from its own configuration",
                )
            return value
        if self.resolver.is_expression(raw):
            self.book.attention(
                self.at(path),
                "the secret came from the template's input: written as '****', the worker's configured credential "
                "is used (README: Credentials)",
            )
        else:
            self.book.attention(
                self.at(path),
                "a literal secret was in the template: written as '****' (the worker's configured credential is "
                "used); rotate the secret, it was committed",
            )
        return MASKED_SECRET

    def carry_buildspec(self, action: dict[str, Any], path: str) -> None:
        """The inline buildspec of the CodeBuild project the action names, for the local CodeBuild runner."""
        name = action.get("configuration", {}).get("ProjectName")
        if name is None:
            return
        for project in self.projects:
            # Resolved apart (its variables are the action's already, or not needed): the name the action names.
            if self.resolver.resolve(project.name, project.address, Book()) != name:
                continue
            where = self.at(path)
            if project.buildspec is None:
                self.book.note(
                    ReportKind.CODEBUILD, where, f"project {project.address}: no inline buildspec (the source's)"
                )
            else:
                buildspec = self.resolver.resolve(project.buildspec, f"{project.address}.buildspec", self.book)
                if isinstance(buildspec, str) and buildspec.strip():
                    action["conveyor"] = {"buildspec": buildspec if buildspec.endswith("\n") else buildspec + "\n"}
                    self.book.note(ReportKind.CODEBUILD, where, f"buildspec carried over from {project.address}")
                else:
                    self.book.attention(where, f"the buildspec of {project.address} is not text: not carried over")
            if project.image is not None:
                self.book.note(ReportKind.CODEBUILD, where, f"image {self.shown(project.image)}")
            for env_name, env_value, env_type in project.environment:
                text = f"environment {self.shown(env_name)}={self.shown(env_value)}"
                self.book.note(ReportKind.CODEBUILD, where, text + (f" ({self.shown(env_type)})" if env_type else ""))
            return
        self.book.note(
            ReportKind.CODEBUILD, self.at(path), f"project '{name}' is not defined in this file: buildspec not carried"
        )

    def shown(self, raw: Any) -> str:
        """A project's value for the report: a literal as it is, an expression as the template wrote it."""
        return str(raw) if self.resolver.is_expression(raw) else str(as_string(raw))


def as_string(value: Any) -> Any:
    """CodePipeline's string for a value: booleans in lower case, numbers as written, JSON for structures."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def _insert_before(mapping: dict[str, Any], before: str, key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for existing, item in mapping.items():
        if existing == before:
            out[key] = value
        out[existing] = item
    return out
