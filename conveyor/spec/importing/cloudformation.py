"""CloudFormation templates (YAML with short-form intrinsics, or JSON) holding AWS::CodePipeline::Pipeline
resources: the loader, the intrinsic functions evaluated statically, and the pipeline read into the
common mapper's shape."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from conveyor.spec.importing.mapper import PipelineSource, ProjectSource, map_pipeline
from conveyor.spec.importing.report import ImportedPipeline
from conveyor.spec.importing.values import NO_VALUE, Book, Unresolved
from conveyor.spec.loading import _UniqueKeyLoader

PIPELINE_TYPE = "AWS::CodePipeline::Pipeline"
PROJECT_TYPE = "AWS::CodeBuild::Project"
# Pseudo parameters with one value everywhere Conveyor runs; the others become variables.
PSEUDO_CONSTANTS = {"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}
SUB_PART = re.compile(r"\$\{([^}]*)\}")
# The short-form tags: `!Ref` and `!Condition` keep their name, the others are `Fn::` functions.
SHORT_FORMS = (
    "Ref Condition Base64 Cidr FindInMap GetAtt GetAZs ImportValue Join Select Split Sub Transform And Equals If "
    "Not Or Length ToJsonString"
).split()
# Pipeline properties with no counterpart in Conveyor's declaration, and what to do instead.
NOT_MAPPED = {
    "Tags": None,  # tags have no meaning here: dropped silently
    "RestartExecutionOnUpdate": "Conveyor does not restart an execution when the declaration changes",
    "DisableInboundStageTransitions": "disable the transitions with `conveyor disable-transition`",
}


@dataclass(frozen=True)
class Intrinsic:
    """An intrinsic function as the template wrote it: `!Sub ...` or `{"Fn::Sub": ...}`."""

    function: str  # "Ref", "Fn::Sub", ...
    argument: Any
    line: int | None = None

    @property
    def short(self) -> str:
        return "!" + self.function.removeprefix("Fn::")

    def __str__(self) -> str:
        argument = self.argument
        if self.function == "Fn::GetAtt" and isinstance(argument, list):
            argument = ".".join(str(a) for a in argument)
        text = argument if isinstance(argument, str) else json.dumps(argument, default=str)
        return f"{self.short} {text}"


class TemplateLoader(_UniqueKeyLoader):
    """YAML as CloudFormation reads it: short-form intrinsics are `Intrinsic` values; repeated keys refused."""


def _construct(function: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Intrinsic:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            argument: Any = loader.construct_scalar(node)
            if function == "Fn::GetAtt":
                argument = str(argument).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            argument = loader.construct_sequence(node, deep=True)
        else:
            assert isinstance(node, yaml.MappingNode)
            argument = loader.construct_mapping(node, deep=True)
        return Intrinsic(function, argument, line)

    return construct


for _name in SHORT_FORMS:
    TemplateLoader.add_constructor(f"!{_name}", _construct(_name if _name in ("Ref", "Condition") else f"Fn::{_name}"))


def load_template(text: str, *, json_text: bool) -> Any:
    """The template's content with every intrinsic (short or long form) as an `Intrinsic`."""
    data = json.loads(text) if json_text else yaml.load(text, Loader=TemplateLoader)  # noqa: S506 - SafeLoader
    return _long_forms(data)


def _long_forms(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref" or (isinstance(key, str) and key.startswith("Fn::")):
                return Intrinsic(key, _long_forms(argument))
        return {key: _long_forms(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_long_forms(item) for item in value]
    if isinstance(value, Intrinsic):
        return Intrinsic(value.function, _long_forms(value.argument), value.line)
    return value


def is_template(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("Resources"), dict)


class TemplateResolver:
    """CloudFormation's intrinsic functions, evaluated with what the template itself says."""

    def __init__(self, template: dict[str, Any]) -> None:
        self.parameters: dict[str, Any] = template.get("Parameters") or {}
        self.mappings: dict[str, Any] = template.get("Mappings") or {}
        self.resources: dict[str, Any] = template.get("Resources") or {}

    def is_expression(self, raw: Any) -> bool:
        return isinstance(raw, Intrinsic)

    def resolve(self, raw: Any, path: str, book: Book, *, static: bool = False) -> Any:
        if isinstance(raw, Intrinsic):
            return self._intrinsic(raw, path, book, static)
        if isinstance(raw, dict):
            items = {key: self.resolve(value, f"{path}.{key}", book, static=static) for key, value in raw.items()}
            return {key: value for key, value in items.items() if value is not NO_VALUE}
        if isinstance(raw, list):
            items_ = [self.resolve(value, f"{path}[{i}]", book, static=static) for i, value in enumerate(raw)]
            return [value for value in items_ if value is not NO_VALUE]
        return raw

    def _intrinsic(self, raw: Intrinsic, path: str, book: Book, static: bool) -> Any:
        where = f"{path} (line {raw.line})" if raw.line else path
        function, argument = raw.function, raw.argument
        if function == "Ref":
            return self._ref(str(argument), str(raw), where, book, static)
        if function == "Fn::GetAtt":
            parts = argument if isinstance(argument, list) else str(argument).split(".", 1)
            unresolved = Unresolved(str(raw), "".join(str(p) for p in parts).replace(".", ""))
            return book.stand_in(unresolved, where, static=static)
        if function == "Fn::Sub":
            return self._sub(raw, where, book, static)
        if function == "Fn::Join" and isinstance(argument, list) and len(argument) == 2:
            separator, parts = argument[0], self.resolve(argument[1], path, book, static=static)
            if isinstance(parts, list):
                return str(separator).join(str(_scalar(p)) for p in parts)
        if function in ("Fn::Select", "Fn::Split") and isinstance(argument, list) and len(argument) == 2:
            try:  # the list or the text must be known to pick from it or split it
                first, second = self.resolve(argument, path, book, static=True)
            except Unresolved:
                first = second = None
            if function == "Fn::Select" and isinstance(second, list) and str(first).isdigit():
                if int(first) < len(second):
                    return second[int(first)]
            if function == "Fn::Split" and isinstance(second, str):
                return second.split(str(first))
        if function == "Fn::If" and isinstance(argument, list) and len(argument) == 3:
            book.attention(where, f"{raw.short} {argument[0]}: took the value for true; check the condition")
            return self.resolve(argument[1], path, book, static=static)
        if function == "Fn::ImportValue":
            name = self.resolve(argument, path, book, static=True)
            unresolved = Unresolved(f"!ImportValue {name}", str(name).replace(":", "-"))
            return book.stand_in(unresolved, where, static=static)
        if function == "Fn::FindInMap" and isinstance(argument, list) and len(argument) >= 3:
            return self._find_in_map(raw, where, book, static)
        if function == "Fn::Base64":
            text = self.resolve(argument, path, book, static=static)
            if isinstance(text, str) and "#{" not in text:
                return base64.b64encode(text.encode()).decode()
        unresolved = Unresolved(
            str(raw),
            re.sub(r"\[\d+\]$", "", path.rsplit(".", 1)[-1]),
            attention=f"{raw.short} is not evaluated by conveyor import: became a variable; check the value",
        )
        if not static:
            return book.stand_in(unresolved, where, static=False)
        raise unresolved

    def _ref(self, name: str, origin: str, where: str, book: Book, static: bool) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in PSEUDO_CONSTANTS:
            return PSEUDO_CONSTANTS[name]
        if name.startswith("AWS::"):
            return book.stand_in(Unresolved(origin, name.replace("::", "")), where, static=static)
        parameter = self.parameters.get(name)
        if isinstance(parameter, dict):
            default = parameter.get("Default")
            if isinstance(default, list):
                default = ",".join(str(d) for d in default)
            unresolved = Unresolved(origin, name, None if default is None else str(_scalar(default)))
            return book.stand_in(unresolved, where, static=static)
        resource = self.resources.get(name)
        if isinstance(resource, dict):
            physical = _name_property(resource)
            if physical is not None:  # the name the template gives it, as an expression of its own
                return self.resolve(physical, where.split(" (line")[0], book, static=static)
            # CloudFormation names it after the stack and the logical id: for a CodeBuild project (which the
            # local runner finds by the action's ProjectName) the logical id is the best default.
            default = name if resource.get("Type") == PROJECT_TYPE else None
            return book.stand_in(Unresolved(origin, name, default), where, static=static)
        book.attention(where, f"{origin}: the template has no parameter or resource '{name}'")
        return book.stand_in(Unresolved(origin, name), where, static=static)

    def _sub(self, raw: Intrinsic, where: str, book: Book, static: bool) -> str:
        argument = raw.argument
        template, names = (argument[0], argument[1]) if isinstance(argument, list) else (argument, {})
        inner = where.split(" (line")[0]
        local = {key: self.resolve(value, inner, book, static=static) for key, value in (names or {}).items()}

        def part(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in local:
                return str(_scalar(local[name]))
            if "." in name and not name.startswith("AWS::"):
                return str(self._intrinsic(Intrinsic("Fn::GetAtt", name.split(".", 1)), where, book, static))
            return str(_scalar(self._ref(name, f"!Ref {name}", where, book, static)))

        return SUB_PART.sub(part, str(template))

    def _find_in_map(self, raw: Intrinsic, where: str, book: Book, static: bool) -> Any:
        name, first, second = raw.argument[:3]
        try:
            keys = [self.resolve(k, where, book, static=True) for k in (name, first, second)]
            return self.mappings[keys[0]][keys[1]][keys[2]]
        except (Unresolved, KeyError, TypeError):
            unresolved = Unresolved(str(raw), f"{name}{second}" if isinstance(second, str) else str(name))
            unresolved.attention = f"{raw.short}: the map keys have no value before the pipeline runs; check it"
            return book.stand_in(unresolved, where, static=static)


def _name_property(resource: dict[str, Any]) -> Any:
    """The property that names a resource (`Name`, `BucketName`, ...), as the template wrote it, or None."""
    properties = resource.get("Properties") or {}
    kind = str(resource.get("Type", "")).rsplit("::", 1)[-1]
    for key in ("Name", f"{kind}Name"):
        if key in properties:
            return properties[key]
    return None


def _scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def import_template(template: dict[str, Any]) -> list[ImportedPipeline]:
    """Every AWS::CodePipeline::Pipeline resource of the template, mapped."""
    resolver = TemplateResolver(template)
    resources = template["Resources"]
    projects = [
        _project(logical_id, resource)
        for logical_id, resource in resources.items()
        if isinstance(resource, dict) and resource.get("Type") == PROJECT_TYPE
    ]
    imported = []
    for logical_id, resource in resources.items():
        if not (isinstance(resource, dict) and resource.get("Type") == PIPELINE_TYPE):
            continue
        source = PipelineSource(logical_id, _pipeline_fields(resource.get("Properties") or {}))
        if "Condition" in resource:
            source.book.attention(logical_id, f"created only when condition '{resource['Condition']}' holds")
        for key in resource.get("Properties") or {}:
            if key in NOT_MAPPED and NOT_MAPPED[key]:
                source.book.attention(f"{logical_id}.{key}", f"not mapped: {NOT_MAPPED[key]}")
            elif key not in PIPELINE_PROPERTIES and key not in NOT_MAPPED:
                source.book.attention(f"{logical_id}.{key}", "not a pipeline property Conveyor knows: left out")
        imported.append(map_pipeline(source, resolver, projects))
    return imported


def _project(logical_id: str, resource: dict[str, Any]) -> ProjectSource:
    properties = resource.get("Properties") or {}
    source = properties.get("Source") or {}
    environment = properties.get("Environment") or {}
    name = properties.get("Name", Intrinsic("Ref", logical_id))
    variables = [
        (entry.get("Name"), entry.get("Value"), entry.get("Type"))
        for entry in environment.get("EnvironmentVariables") or []
        if isinstance(entry, dict)
    ]
    return ProjectSource(
        logical_id,
        name,
        buildspec=source.get("BuildSpec") if isinstance(source, dict) else None,
        image=environment.get("Image") if isinstance(environment, dict) else None,
        environment=variables,
    )


# PascalCase property -> the declaration's field (the mapper's shape).
PIPELINE_PROPERTIES = {
    "Name": "name",
    "RoleArn": "roleArn",
    "ArtifactStore": "artifactStore",
    "ArtifactStores": "artifactStores",
    "ExecutionMode": "executionMode",
    "PipelineType": "pipelineType",
    "Variables": "variables",
    "Triggers": "triggers",
    "Stages": "stages",
}


def _pipeline_fields(properties: dict[str, Any]) -> dict[str, Any]:
    fields = {PIPELINE_PROPERTIES[key]: value for key, value in properties.items() if key in PIPELINE_PROPERTIES}
    stores = fields.pop("artifactStores", None)
    if isinstance(stores, list):  # [{Region, ArtifactStore}] -> {region: store}
        fields["artifactStores"] = {
            str(entry.get("Region")): camel(entry.get("ArtifactStore")) for entry in stores if isinstance(entry, dict)
        }
    for key in ("artifactStore", "variables", "triggers"):
        if key in fields:
            fields[key] = camel(fields[key])
    fields["stages"] = [_stage(stage) for stage in fields.get("stages") or [] if isinstance(stage, dict)]
    return fields


def _stage(stage: dict[str, Any]) -> dict[str, Any]:
    out = {camel_key(key): camel(value) for key, value in stage.items() if key != "Actions"}
    out["actions"] = [_action(action) for action in stage.get("Actions") or [] if isinstance(action, dict)]
    return out


def _action(action: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in action.items():
        if key == "ActionTypeId" and isinstance(value, dict):
            out.update({camel_key(k): v for k, v in value.items()})
        elif key in ("InputArtifacts", "OutputArtifacts") and isinstance(value, list):
            out[camel_key(key)] = [item.get("Name") if isinstance(item, dict) else item for item in value]
        elif key == "Configuration":
            out["configuration"] = value  # its keys are the provider's own: kept as written
        else:
            out[camel_key(key)] = camel(value)
    return out


def camel_key(key: str) -> str:
    return key[:1].lower() + key[1:]


def camel(value: Any) -> Any:
    """PascalCase keys to CodePipeline's camelCase, all the way down (not for configuration maps)."""
    if isinstance(value, dict):
        return {camel_key(str(key)): item if key == "Configuration" else camel(item) for key, item in value.items()}
    if isinstance(value, list):
        return [camel(item) for item in value]
    return value
