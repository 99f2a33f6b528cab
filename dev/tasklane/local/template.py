"""``template.yaml``, read the way the local stack needs it.

Parses CloudFormation's short-form tags, evaluates Conditions from parameter defaults (or
overrides), and resolves the intrinsic functions the functions' settings use (``Ref``,
``Fn::GetAtt``, ``Fn::Sub``, ``Fn::If``, ``Fn::Join``, ``Fn::Select``, ``Fn::Equals`` …) against
a table of local values, e.g. a queue's logical id → its moto URL. Nothing here knows tasklane's
own resource names: the emulator finds functions, queues, routes and schedules by their types.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tasklane.errors import ConfigurationError

_NO_VALUE = object()


class _Loader(yaml.SafeLoader):
    """A YAML loader that turns ``!Ref x`` into ``{"Ref": "x"}`` and so on."""


def _construct(tag: str):
    name = tag if tag in ("Ref", "Condition") else f"Fn::{tag}"

    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if tag == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    return construct


for _tag in (
    "Ref",
    "GetAtt",
    "Sub",
    "If",
    "Join",
    "Select",
    "Split",
    "Equals",
    "Not",
    "And",
    "Or",
    "Condition",
    "FindInMap",
    "Base64",
    "GetAZs",
    "ImportValue",
    "Cidr",
):
    _Loader.add_constructor(f"!{_tag}", _construct(_tag))


@dataclass(frozen=True)
class Function:
    logical_id: str
    code_uri: Path
    handler: str
    timeout: float
    memory: int
    environment: dict[str, Any]
    events: dict[str, dict]


@dataclass
class Template:
    path: Path
    body: dict
    parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | str, overrides: Mapping[str, str] | None = None) -> Template:
        path = Path(path)
        try:
            body = yaml.load(path.read_text(), Loader=_Loader)
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"cannot read {path}: {exc}") from exc
        if not isinstance(body, dict) or "Resources" not in body:
            raise ConfigurationError(f"{path} is not a CloudFormation/SAM template")
        params = {
            name: spec.get("Default", "") for name, spec in (body.get("Parameters") or {}).items()
        }
        params.update(overrides or {})
        return cls(path, body, params)

    @property
    def resources(self) -> dict[str, dict]:
        return self.body["Resources"]

    # -- conditions and intrinsics ---------------------------------------------------------
    def condition(self, name: str) -> bool:
        try:
            expr = self.body["Conditions"][name]
        except KeyError:
            raise ConfigurationError(f"unknown condition {name!r}") from None
        return bool(self.resolve(expr, {}))

    def exists(self, logical_id: str) -> bool:
        cond = self.resources[logical_id].get("Condition")
        return cond is None or self.condition(cond)

    def resolve(self, value: Any, refs: Mapping[str, Any]) -> Any:
        """Resolve intrinsics; ``refs`` maps logical ids (and ``Id.Attr``) to local values."""
        if isinstance(value, list):
            items = [self.resolve(v, refs) for v in value]
            return [i for i in items if i is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            out = {k: self.resolve(v, refs) for k, v in value.items()}
            return {k: v for k, v in out.items() if v is not _NO_VALUE}
        ((key, arg),) = value.items()
        if key == "Ref":
            return self._ref(arg, refs)
        if key == "Fn::GetAtt":
            name = ".".join(arg) if isinstance(arg, list) else arg
            if name in refs:
                return refs[name]
            raise ConfigurationError(f"cannot resolve !GetAtt {name} locally")
        if key == "Fn::Sub":
            return self._sub(arg, refs)
        if key == "Fn::If":
            cond, yes, no = arg
            return self.resolve(yes if self.condition(cond) else no, refs)
        if key == "Fn::Join":
            sep, items = arg
            return sep.join(str(i) for i in self.resolve(items, refs))
        if key == "Fn::Select":
            index, items = arg
            return self.resolve(items, refs)[int(self.resolve(index, refs))]
        if key == "Fn::Split":
            sep, text = arg
            return str(self.resolve(text, refs)).split(sep)
        if key == "Fn::Equals":
            a, b = (self.resolve(x, refs) for x in arg)
            return str(a) == str(b)
        if key == "Fn::Not":
            return not self.resolve(arg[0], refs)
        if key == "Fn::And":
            return all(self.resolve(a, refs) for a in arg)
        if key == "Fn::Or":
            return any(self.resolve(a, refs) for a in arg)
        if key == "Condition":
            return self.condition(arg)
        if key == "Fn::GetAZs":
            return ["local-a", "local-b"]
        return {key: self.resolve(arg, refs)}

    def _ref(self, name: str, refs: Mapping[str, Any]) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in refs:
            return refs[name]
        pseudo = {
            "AWS::Region": "us-east-1",
            "AWS::AccountId": "123456789012",
            "AWS::StackName": "tasklane-local",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            value = self.parameters[name]
            spec = self.body.get("Parameters", {}).get(name, {})
            if spec.get("Type") == "CommaDelimitedList" and isinstance(value, str):
                return [v for v in value.split(",") if v] if value else [""]
            return value
        raise ConfigurationError(f"cannot resolve !Ref {name} locally")

    def _sub(self, arg: Any, refs: Mapping[str, Any]) -> str:
        text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        values = {k: self.resolve(v, refs) for k, v in extra.items()}

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in values:
                return str(values[name])
            if "." in name:
                return str(self.resolve({"Fn::GetAtt": name.split(".", 1)}, refs))
            return str(self._ref(name, refs))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    # -- what the emulator needs -----------------------------------------------------------
    def of_type(self, kind: str) -> Iterator[tuple[str, dict]]:
        for logical_id, resource in self.resources.items():
            if resource.get("Type") == kind and self.exists(logical_id):
                yield logical_id, resource

    def layer_paths(self) -> list[str]:
        """Every layer's directory (its ``ContentUri``): what ``/opt/python`` holds in Lambda,
        so functions, workers and ``tasklane invoke`` import the application's own modules."""
        return [
            str(self.path.parent / str(layer["Properties"].get("ContentUri", "")))
            for _, layer in self.of_type("AWS::Serverless::LayerVersion")
        ]

    def functions(self, refs: Mapping[str, Any] | None = None) -> list[Function]:
        """Every existing AWS::Serverless::Function, with Globals merged in."""
        refs = refs or {}
        globals_ = (self.body.get("Globals") or {}).get("Function") or {}
        out = []
        for logical_id, resource in self.of_type("AWS::Serverless::Function"):
            props = resource.get("Properties") or {}
            env = dict(((globals_.get("Environment") or {}).get("Variables")) or {})
            env.update(((props.get("Environment") or {}).get("Variables")) or {})
            out.append(
                Function(
                    logical_id=logical_id,
                    code_uri=self.path.parent / props.get("CodeUri", globals_.get("CodeUri", ".")),
                    handler=props.get("Handler", globals_.get("Handler", "")),
                    timeout=float(
                        self.resolve(props.get("Timeout", globals_.get("Timeout", 3)), refs)
                    ),
                    memory=int(
                        self.resolve(props.get("MemorySize", globals_.get("MemorySize", 128)), refs)
                    ),
                    environment=env,
                    events=props.get("Events") or {},
                )
            )
        return out

    def function(self, logical_id: str) -> Function:
        for fn in self.functions():
            if fn.logical_id == logical_id:
                return fn
        known = ", ".join(f.logical_id for f in self.functions())
        raise ConfigurationError(f"no function {logical_id!r} in {self.path.name} (have: {known})")
