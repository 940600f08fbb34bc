"""Every touch of moto's internals, for contract tests (the moto server runs in the test process)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from moto.codebuild.models import CodeBuildBackend
from moto.codebuild.responses import CodeBuildResponse
from moto.core.utils import iso_8601_datetime_with_milliseconds
from moto.s3.models import s3_backends
from moto.sts.models import sts_backends
from moto.utilities.utils import get_partition


def assumed_role_credentials(account: str) -> list[tuple[str, str, str, str]]:
    """(session name, AccessKeyId, SecretAccessKey, SessionToken) of each role assumed in `account`: what STS gave
    the worker, to search the recorded histories for."""
    return [
        (role.session_name, role.access_key_id, role.secret_access_key, role.session_token)
        for role in sts_backends[account]["aws"].assumed_roles
    ]


# --- CodeBuild ---------------------------------------------------------------------------------------------------
# moto's CodeBuild drops StartBuild's overrides (environment variables, sources, secondary artifacts) and finishes
# every build as SUCCEEDED on the first BatchGetBuilds. CodeBuildScript keeps what StartBuild was sent on the stored
# build, and plays each build through CodeBuild's phases one phase per BatchGetBuilds, to the end a test scripts.

BUILD_PHASES = (
    "PROVISIONING",
    "DOWNLOAD_SOURCE",
    "INSTALL",
    "PRE_BUILD",
    "BUILD",
    "POST_BUILD",
    "UPLOAD_ARTIFACTS",
    "FINALIZING",
)


@dataclass
class ScriptedBuild:
    """How every build started while the script is installed ends."""

    status: str = "SUCCEEDED"  # or FAILED, FAULT, TIMED_OUT
    failed_phase: str = "BUILD"  # where a build that does not succeed fails
    message: str = "Error while executing command: make. Reason: exit status 2"
    exported: dict[str, str] = field(default_factory=dict)  # exportedEnvironmentVariables of a succeeded build
    artifacts: dict[str, bytes] = field(default_factory=dict)  # artifactIdentifier -> the zip the build uploads
    pause_at: str | None = None  # the build stays IN_PROGRESS in this phase until `release` is set


@dataclass
class CodeBuildScript:
    """Scripted CodeBuild in the in-process moto server; its counters are moto's record of the requests it served."""

    outcome: ScriptedBuild = field(default_factory=ScriptedBuild)
    starts: list[dict[str, Any]] = field(default_factory=list)  # every StartBuild request body, as sent
    lookups: int = 0  # ListBuildsForProject calls
    polls: int = 0  # BatchGetBuilds calls
    stops: list[str] = field(default_factory=list)  # StopBuild's build ids
    hold_start: threading.Event | None = None  # set: StartBuild's answer waits until it is set (the build exists)
    start_held: threading.Event = field(default_factory=threading.Event)  # a StartBuild is being held
    release: threading.Event = field(default_factory=threading.Event)
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> moto's stored build

    def install(self, monkeypatch: pytest.MonkeyPatch) -> CodeBuildScript:
        script = self
        original_start = CodeBuildResponse.start_build

        def start_build(response: CodeBuildResponse) -> Any:
            body = json.loads(response.body)
            script.starts.append(body)
            result = original_start(response)
            build = response.codebuild_backend.build_metadata[body["projectName"]].build_metadata
            _apply_overrides(build, body)
            script.builds[build["id"]] = build
            if script.hold_start is not None:
                script.start_held.set()
                script.hold_start.wait(60)
            return result

        def batch_get_builds(backend: CodeBuildBackend, ids: list[str]) -> list[dict[str, Any]]:
            script.polls += 1
            found = [script.builds[i] for i in ids if i in script.builds]
            for build in found:
                script._advance(backend, build)
            return found

        def list_builds_for_project(backend: CodeBuildBackend, project_name: str) -> list[str]:
            script.lookups += 1
            return list(reversed(backend.build_history.get(project_name, [])))  # newest first, as CodeBuild

        def stop_build(backend: CodeBuildBackend, build_id: str) -> dict[str, Any]:
            script.stops.append(build_id)
            build = script.builds[build_id]
            if not build["buildComplete"]:
                last = build["phases"][-1]
                last.setdefault("phaseStatus", "STOPPED")
                last.setdefault("endTime", iso_8601_datetime_with_milliseconds())
                _complete(build, "STOPPED")
            return build

        monkeypatch.setattr(CodeBuildResponse, "start_build", start_build)
        monkeypatch.setattr(CodeBuildBackend, "batch_get_builds", batch_get_builds)
        monkeypatch.setattr(CodeBuildBackend, "list_builds_for_project", list_builds_for_project)
        monkeypatch.setattr(CodeBuildBackend, "stop_build", stop_build)
        return self

    def _advance(self, backend: CodeBuildBackend, build: dict[str, Any]) -> None:
        """One step: end the running phase (or fail the build in it), or start the next one."""
        if build["buildComplete"]:
            return
        outcome, now, last = self.outcome, iso_8601_datetime_with_milliseconds(), build["phases"][-1]
        if "phaseStatus" not in last:
            if last["phaseType"] == outcome.pause_at and not self.release.is_set():
                return
            failed = outcome.status != "SUCCEEDED" and last["phaseType"] == outcome.failed_phase
            last.update(phaseStatus="FAILED" if failed else "SUCCEEDED", endTime=now, durationInSeconds=1)
            if failed:
                last["contexts"] = [{"statusCode": "COMMAND_EXECUTION_ERROR", "message": outcome.message}]
                _complete(build, outcome.status)
            return
        done = last["phaseType"]
        if done == BUILD_PHASES[-1]:
            build["exportedEnvironmentVariables"] = [{"name": k, "value": v} for k, v in outcome.exported.items()]
            self._upload_artifacts(backend, build)
            _complete(build, "SUCCEEDED")
            return
        following = BUILD_PHASES[BUILD_PHASES.index(done) + 1] if done in BUILD_PHASES else BUILD_PHASES[0]
        build["phases"].append({"phaseType": following, "startTime": now})
        build["currentPhase"] = following

    def _upload_artifacts(self, backend: CodeBuildBackend, build: dict[str, Any]) -> None:
        s3 = s3_backends[backend.account_id][get_partition(backend.region_name)]
        for artifact in [build.get("artifacts") or {}, *build.get("secondaryArtifacts", [])]:
            data = self.outcome.artifacts.get(artifact.get("artifactIdentifier") or artifact.get("name", ""))
            if data is not None and artifact.get("type") == "S3":
                s3.put_object(artifact["location"], f"{artifact['path']}/{artifact['name']}", data)


def _apply_overrides(build: dict[str, Any], body: dict[str, Any]) -> None:
    """Keep on the stored build what StartBuild was sent and moto drops."""
    build["environment"]["environmentVariables"] = body.get("environmentVariablesOverride", [])
    if "sourceTypeOverride" in body:
        build["source"] = {"type": body["sourceTypeOverride"], "location": body.get("sourceLocationOverride")}
    build["secondarySources"] = body.get("secondarySourcesOverride", [])
    build["secondaryArtifacts"] = body.get("secondaryArtifactsOverride", [])
    if "timeoutInMinutesOverride" in body:
        build["timeoutInMinutes"] = body["timeoutInMinutesOverride"]


def _complete(build: dict[str, Any], status: str) -> None:
    now = iso_8601_datetime_with_milliseconds()
    build["phases"].append({"phaseType": "COMPLETED", "startTime": now})
    build.update(buildStatus=status, buildComplete=True, currentPhase="COMPLETED", endTime=now)


# --- Lambda ------------------------------------------------------------------------------------------------------
# moto's simple Lambda backend (no Docker; `use_docker: false` in /moto-api/config before functions are created)
# answers every invoke with a queued result and never runs code, keeps no record of what it was sent, and cannot
# answer with a function error. LambdaScript records each invoke as sent and scripts function errors.


@dataclass
class LambdaInvocation:
    function: str
    invocation_type: str  # RequestResponse or Event
    event: Any  # the payload, parsed

    @property
    def job(self) -> dict[str, Any]:
        job: dict[str, Any] = self.event["CodePipeline.job"]
        return job


@dataclass
class LambdaScript:
    invocations: list[LambdaInvocation] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)  # the next invokes answer with these function errors
    invoked: threading.Condition = field(default_factory=threading.Condition)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> LambdaScript:
        from moto.awslambda_simple.models import LambdaSimpleBackend

        script = self
        original = LambdaSimpleBackend.invoke

        def invoke(
            backend: LambdaSimpleBackend, function_name: str, qualifier: Any, body: Any, headers: Any, response: Any
        ) -> Any:
            kind = headers.get("X-Amz-Invocation-Type") or "RequestResponse"
            text = body.decode() if isinstance(body, bytes) else body
            with script.invoked:
                script.invocations.append(LambdaInvocation(function_name, kind, json.loads(text) if text else None))
                script.invoked.notify_all()
            if script.errors:
                response["x-amz-function-error"] = "Unhandled"
                return json.dumps(script.errors.pop(0)).encode()
            return original(backend, function_name, qualifier, body, headers, response)

        monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)
        return self

    def wait_for(self, count: int, timeout: float = 30) -> LambdaInvocation:
        """The `count`-th invocation, once it happened (blocking: call it from a thread)."""
        with self.invoked:
            if not self.invoked.wait_for(lambda: len(self.invocations) >= count, timeout):
                raise AssertionError(f"expected {count} invocations, saw {len(self.invocations)}")
            return self.invocations[count - 1]


# --- CloudFormation ----------------------------------------------------------------------------------------------
# moto's CloudFormation is synchronous: an operation is done when its call returns, failures raise from the call and
# never reach ROLLBACK_* states, and a stack's events never carry the operation's ClientRequestToken.
# CloudFormationScript counts the stack-changing requests moto served, and scripts what real CloudFormation answers:
# a change set without changes (FAILED, "didn't contain changes"), a create ending ROLLBACK_COMPLETE and an update
# ending UPDATE_ROLLBACK_COMPLETE with a *_FAILED resource event, and an update that stays UPDATE_IN_PROGRESS until
# the test releases it.

NO_CHANGES_REASON = (
    "The submitted information didn't contain changes. Submit different information to create a change set."
)
_CFN_OPERATIONS = ("create_stack", "update_stack", "create_change_set", "execute_change_set", "delete_stack")


@dataclass
class ResourceFailure:
    """The resource an operation fails on, and CloudFormation's reason."""

    logical_id: str
    resource_type: str
    reason: str


@dataclass
class CloudFormationScript:
    no_changes: bool = False  # every change set comes back FAILED: no changes
    fail_create: ResourceFailure | None = None  # a create ends ROLLBACK_COMPLETE
    fail_update: ResourceFailure | None = None  # an update ends UPDATE_ROLLBACK_COMPLETE (the stack as it was)
    hold_updates: bool = False  # an update stays UPDATE_IN_PROGRESS until `release` is set
    release: threading.Event = field(default_factory=threading.Event)
    calls: list[tuple[str, str | None]] = field(default_factory=list)  # (operation, ClientRequestToken) served
    held: list[Any] = field(default_factory=list)  # moto's stacks whose update is held

    def count(self, operation: str) -> int:
        return sum(1 for name, _ in self.calls if name == operation)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> CloudFormationScript:
        from moto.cloudformation.models import CloudFormationBackend
        from moto.cloudformation.responses import CloudFormationResponse

        script = self
        for operation in _CFN_OPERATIONS:
            monkeypatch.setattr(CloudFormationResponse, operation, script._counted(operation))
        original_create_stack = CloudFormationBackend.create_stack
        original_update_stack = CloudFormationBackend.update_stack
        original_create_change_set = CloudFormationBackend.create_change_set
        original_describe_stacks = CloudFormationBackend.describe_stacks

        def create_stack(backend: CloudFormationBackend, *args: Any, **kwargs: Any) -> Any:
            stack = original_create_stack(backend, *args, **kwargs)
            if script.fail_create is not None:
                _fail(stack, "CREATE", script.fail_create, "ROLLBACK")
            return stack

        def update_stack(backend: CloudFormationBackend, name: str, *args: Any, **kwargs: Any) -> Any:
            if script.fail_update is not None:
                stack = backend.get_stack(name)  # left as it was: CloudFormation rolled the update back
                _fail(stack, "UPDATE", script.fail_update, "UPDATE_ROLLBACK")
                return stack
            stack = original_update_stack(backend, name, *args, **kwargs)
            if script.hold_updates and not script.release.is_set():
                stack.status = "UPDATE_IN_PROGRESS"
                stack.events.pop()  # its UPDATE_COMPLETE comes on release
                script.held.append(stack)
            return stack

        def create_change_set(backend: CloudFormationBackend, *args: Any, **kwargs: Any) -> Any:
            change_set_id, stack_id = original_create_change_set(backend, *args, **kwargs)
            if script.no_changes:
                change_set = backend.change_sets[change_set_id]
                change_set.status, change_set.execution_status = "FAILED", "UNAVAILABLE"
                change_set.status_reason = NO_CHANGES_REASON
            return change_set_id, stack_id

        def describe_stacks(backend: CloudFormationBackend, name_or_stack_id: str) -> Any:
            if script.release.is_set():
                while script.held:
                    stack = script.held.pop()
                    stack._add_stack_event("UPDATE_COMPLETE")
                    stack.status = "UPDATE_COMPLETE"
            return original_describe_stacks(backend, name_or_stack_id)

        original_validate = CloudFormationResponse._validate_different_update

        def validate_different_update(response: CloudFormationResponse, *args: Any) -> None:
            # moto refuses a change set without changes from the call ("No updates are to be performed."); real
            # CloudFormation creates it and answers FAILED.
            if not (script.no_changes and response._get_action() == "CreateChangeSet"):
                original_validate(response, *args)

        monkeypatch.setattr(CloudFormationResponse, "_validate_different_update", validate_different_update)
        monkeypatch.setattr(CloudFormationBackend, "create_stack", create_stack)
        monkeypatch.setattr(CloudFormationBackend, "update_stack", update_stack)
        monkeypatch.setattr(CloudFormationBackend, "create_change_set", create_change_set)
        monkeypatch.setattr(CloudFormationBackend, "describe_stacks", describe_stacks)
        return self

    def _counted(self, operation: str) -> Any:
        from moto.cloudformation.responses import CloudFormationResponse

        original = getattr(CloudFormationResponse, operation)
        script = self

        def served(response: CloudFormationResponse) -> Any:
            script.calls.append((operation, response._get_param("ClientRequestToken")))
            return original(response)

        return served


def _fail(stack: Any, operation: str, failure: ResourceFailure, rollback: str) -> None:
    """CloudFormation's record of an operation failing on one resource, then rolled back."""
    from moto.cloudformation.models import Event

    if operation == "UPDATE":
        stack._add_stack_event("UPDATE_IN_PROGRESS", resource_status_reason="User Initiated")
    event = Event(
        stack_id=stack.stack_id,
        stack_name=stack.name,
        logical_resource_id=failure.logical_id,
        physical_resource_id="",
        resource_type=failure.resource_type,
        resource_status=f"{operation}_FAILED",
        resource_status_reason=failure.reason,
        resource_properties=None,
    )
    stack.events.append(event)
    stack._add_stack_event(f"{rollback}_IN_PROGRESS", resource_status_reason="The following resource(s) failed")
    stack._add_stack_event(f"{rollback}_COMPLETE")
    stack.status = f"{rollback}_COMPLETE"


@dataclass
class MotoRecording:
    """moto's request recorder (`/moto-api/recorder/start-recording`) writing to the test's own file: every request
    with its body, including fields moto ignores (CloudFormation's Capabilities and ClientRequestToken)."""

    path: Any  # a Path in the test's tmp_path

    def start(self, post: Any, monkeypatch: pytest.MonkeyPatch) -> MotoRecording:
        from moto.moto_api import recorder

        monkeypatch.setattr(recorder, "_location", str(self.path))
        post("/moto-api/recorder/start-recording")
        return self

    def stop(self, post: Any) -> None:
        post("/moto-api/recorder/stop-recording")

    def query_requests(self, action: str) -> list[dict[str, str]]:
        """The form fields of each AWS query-protocol request `action` (CreateStack, UpdateStack...), in order."""
        import base64
        from urllib.parse import parse_qsl

        found = []
        for line in self.path.read_text().splitlines() if self.path.exists() else []:
            entry = json.loads(line)
            body = entry.get("body") or ""
            if entry.get("body_encoded"):
                body = base64.b64decode(body).decode(errors="replace")  # an S3 upload's zip is recorded too
            fields = dict(parse_qsl(body, keep_blank_values=True))
            if fields.get("Action") == action:
                found.append(fields)
        return found


# --- ECS ---------------------------------------------------------------------------------------------------------
# moto's ECS keeps one deployment per service forever: UpdateService changes the service's task definition but adds
# no deployment, and no deployment ever moves (no rollout, no circuit breaker). EcsScript answers UpdateService as
# ECS does (a new PRIMARY deployment IN_PROGRESS, the previous one ACTIVE), plays each new deployment to the outcome
# a test scripts after a number of DescribeServices, and counts the RegisterTaskDefinition and UpdateService requests
# moto served.

ECS_COMPLETED = "COMPLETED"
ECS_FAILED = "FAILED"  # the rollout fails; nothing rolls back
ECS_ROLLBACK = "ROLLBACK"  # the circuit breaker fails it and starts a deployment of the previous task definition
ECS_HOLD = "HOLD"  # stays IN_PROGRESS until `release` is set, then completes


@dataclass
class EcsScript:
    outcomes: list[str] = field(default_factory=list)  # one per UpdateService, in order; then COMPLETED
    after: int = 1  # DescribeServices answered before a deployment reaches its outcome
    release: threading.Event = field(default_factory=threading.Event)
    calls: list[str] = field(default_factory=list)  # Register/ListTaskDefinition(s), UpdateService requests served
    playing: dict[str, tuple[str, int]] = field(default_factory=dict)  # deployment id -> (outcome, polls so far)

    def count(self, operation: str) -> int:
        return self.calls.count(operation)

    def deployments(self, cluster: str, service: str) -> list[dict[str, Any]]:
        """The service's deployments as moto holds them (read by tests waiting for the update)."""
        from moto.ecs.models import ecs_backends

        from tests.aws import ACCOUNT, REGION

        found: list[dict[str, Any]] = ecs_backends[ACCOUNT][REGION].services[f"{cluster}:{service}"].deployments
        return found

    def install(self, monkeypatch: pytest.MonkeyPatch) -> EcsScript:
        from moto.ecs.models import EC2ContainerServiceBackend
        from moto.ecs.responses import EC2ContainerServiceResponse

        script = self
        original_register = EC2ContainerServiceResponse.register_task_definition
        original_list = EC2ContainerServiceResponse.list_task_definitions
        original_update_response = EC2ContainerServiceResponse.update_service
        original_update = EC2ContainerServiceBackend.update_service
        original_describe = EC2ContainerServiceBackend.describe_services

        def register_task_definition(response: EC2ContainerServiceResponse) -> Any:
            script.calls.append("RegisterTaskDefinition")
            return original_register(response)

        def list_task_definitions(response: EC2ContainerServiceResponse) -> Any:
            script.calls.append("ListTaskDefinitions")
            return original_list(response)

        def update_service_response(response: EC2ContainerServiceResponse) -> Any:
            script.calls.append("UpdateService")
            return original_update_response(response)

        def update_service(backend: EC2ContainerServiceBackend, properties: dict[str, Any]) -> Any:
            changing = properties.get("task_definition")
            service = original_update(backend, properties)
            if changing:
                outcome = script.outcomes.pop(0) if script.outcomes else ECS_COMPLETED
                script._start(service, service.task_definition, outcome)
            return service

        def describe_services(backend: EC2ContainerServiceBackend, *args: Any, **kwargs: Any) -> Any:
            services, failures = original_describe(backend, *args, **kwargs)
            for service in services:
                script._advance(service)
            return services, failures

        monkeypatch.setattr(EC2ContainerServiceResponse, "register_task_definition", register_task_definition)
        monkeypatch.setattr(EC2ContainerServiceResponse, "list_task_definitions", list_task_definitions)
        monkeypatch.setattr(EC2ContainerServiceResponse, "update_service", update_service_response)
        monkeypatch.setattr(EC2ContainerServiceBackend, "update_service", update_service)
        monkeypatch.setattr(EC2ContainerServiceBackend, "describe_services", describe_services)
        return self

    def _start(self, service: Any, task_definition: str, outcome: str, reason: str | None = None) -> dict[str, Any]:
        import uuid as _uuid

        from moto.core.utils import utcnow

        for deployment in service.deployments:
            if deployment["status"] == "PRIMARY":
                deployment["status"] = "ACTIVE"
        deployment_id = f"ecs-svc/{_uuid.uuid4().int % 10**19}"
        deployment = {
            **(service.deployments[0] if service.deployments else {}),
            "id": deployment_id,
            "status": "PRIMARY",
            "taskDefinition": task_definition,
            "rolloutState": "IN_PROGRESS",
            "rolloutStateReason": reason or "ECS deployment in progress.",
            "runningCount": 0,
            "pendingCount": service.desired_count,
            "desiredCount": service.desired_count,
            "createdAt": utcnow(),
            "updatedAt": utcnow(),
        }
        service.deployments.insert(0, deployment)
        self.playing[deployment_id] = (outcome, 0)
        return deployment

    def _advance(self, service: Any) -> None:
        for deployment in list(service.deployments):
            if deployment["id"] not in self.playing:
                continue
            outcome, polls = self.playing[deployment["id"]]
            polls += 1
            self.playing[deployment["id"]] = (outcome, polls)
            if polls <= self.after or (outcome == ECS_HOLD and not self.release.is_set()):
                continue
            del self.playing[deployment["id"]]
            if outcome in (ECS_COMPLETED, ECS_HOLD):
                deployment.update(rolloutState="COMPLETED", runningCount=deployment["desiredCount"], pendingCount=0,
                                  rolloutStateReason=f"ECS deployment {deployment['id']} completed.")  # fmt: skip
                service.deployments[:] = [deployment]  # the older ones drained
            elif outcome == ECS_FAILED:
                deployment.update(rolloutState="FAILED", rolloutStateReason="tasks failed to start")
            elif outcome == ECS_ROLLBACK:
                previous = next(d for d in service.deployments if d is not deployment)["taskDefinition"]
                deployment.update(
                    rolloutState="FAILED",
                    rolloutStateReason="ECS deployment circuit breaker: tasks failed to start.",
                )
                service.task_definition = previous
                why = f"ECS deployment circuit breaker: rolling back to deploymentId {deployment['id']}."
                self._start(service, previous, ECS_COMPLETED, why)


@dataclass
class CloudFormationAnswerHold(CloudFormationScript):
    """CloudFormationScript whose stack-changing calls named in `hold_answers` are served by moto (the operation
    runs) but answered only once `answer` is set: a worker SIGKILLed meanwhile made the call and never heard back,
    so no heartbeat carried the operation."""

    hold_answers: set[str] = field(default_factory=set)  # create_stack, update_stack, execute_change_set...
    answer: threading.Event = field(default_factory=threading.Event)
    answer_held: threading.Event = field(default_factory=threading.Event)  # a served call's answer is waiting

    def _counted(self, operation: str) -> Any:
        served = super()._counted(operation)
        script = self

        def held(response: Any) -> Any:
            result = served(response)
            if operation in script.hold_answers and not script.answer.is_set():
                script.answer_held.set()
                script.answer.wait(60)
            return result

        return held


# --- CodeDeploy (contract: scripted outcomes) --------------------------------------------------------------------
# moto's CodeDeploy leaves every deployment `Created`, never fills `errorInformation` or a group's
# `lastSuccessfulDeployment`, and does not serve StopDeployment. CodeDeployScript plays each deployment through
# InProgress to the end a test scripts (one step per GetDeployment), gives a failed one CodeDeploy's error
# information, names a group's newest Succeeded deployment, serves StopDeployment (status Stopped, with what it was
# sent), and counts the CreateDeployment requests moto served.


@dataclass
class CodeDeployScript:
    status: str = "Succeeded"  # how every deployment ends: Succeeded or Failed
    error_code: str = "HEALTH_CONSTRAINTS"
    error_message: str = "The overall deployment failed because too many individual instances failed deployment"
    hold: bool = False  # deployments stay InProgress until `release` is set (or they are stopped)
    steps: int = 2  # GetDeployment calls a deployment spends InProgress before it ends
    release: threading.Event = field(default_factory=threading.Event)
    created: list[str] = field(default_factory=list)  # deployment ids, in the order CreateDeployment served them
    stopped: list[tuple[str, bool]] = field(default_factory=list)  # (deployment id, autoRollbackEnabled)
    _seen: dict[str, int] = field(default_factory=dict)
    _stored: list[Any] = field(default_factory=list)  # moto's deployments the script saw created

    def install(self, monkeypatch: pytest.MonkeyPatch) -> CodeDeployScript:
        from moto.codedeploy import responses
        from moto.codedeploy.models import CodeDeployBackend
        from moto.codedeploy.responses import CodeDeployResponse
        from moto.core.responses import ActionResult

        script = self
        original_create = CodeDeployBackend.create_deployment
        original_get = CodeDeployBackend.get_deployment
        original_info = responses._deployment_info

        def create_deployment(backend: CodeDeployBackend, *args: Any, **kwargs: Any) -> str:
            deployment_id: str = original_create(backend, *args, **kwargs)
            script.created.append(deployment_id)
            script._stored.append(backend.deployments[deployment_id])
            return deployment_id

        def get_deployment(backend: CodeDeployBackend, deployment_id: str) -> Any:
            deployment = original_get(backend, deployment_id)
            script._advance(deployment)
            return deployment

        def deployment_info(deployment: Any) -> dict[str, Any]:
            info: dict[str, Any] = original_info(deployment)
            info["errorInformation"] = getattr(deployment, "scripted_error", {})
            return info

        original_group_info = responses._deployment_group_info

        def deployment_group_info(group: Any) -> dict[str, Any]:
            # moto leaves lastSuccessfulDeployment empty: the group's newest Succeeded deployment, as CodeDeploy says.
            info: dict[str, Any] = original_group_info(group)
            succeeded = [d for d in script._stored if d.deployment_group is group and d.status == "Succeeded"]
            if succeeded:
                last = max(succeeded, key=lambda d: d.create_time)
                info["lastSuccessfulDeployment"] = {"deploymentId": last.deployment_id, "status": "Succeeded"}
            return info

        def stop_deployment(response: CodeDeployResponse) -> Any:
            deployment_id = response._get_param("deploymentId")
            deployment = response.codedeploy_backend.deployments[deployment_id]  # unpatched: no step played
            script.stopped.append((deployment_id, bool(response._get_param("autoRollbackEnabled"))))
            deployment.status = "Stopped"
            deployment.scripted_error = {"code": "DEPLOYMENT_STOPPED", "message": "the deployment was stopped"}
            return ActionResult({"status": "Succeeded", "statusMessage": "stopped"})

        monkeypatch.setattr(CodeDeployBackend, "create_deployment", create_deployment)
        monkeypatch.setattr(CodeDeployBackend, "get_deployment", get_deployment)
        monkeypatch.setattr(responses, "_deployment_info", deployment_info)
        monkeypatch.setattr(responses, "_deployment_group_info", deployment_group_info)
        monkeypatch.setattr(CodeDeployResponse, "stop_deployment", stop_deployment, raising=False)
        return self

    def _advance(self, deployment: Any) -> None:
        if deployment.status in ("Succeeded", "Failed", "Stopped"):
            return
        seen = self._seen.get(deployment.deployment_id, 0) + 1
        self._seen[deployment.deployment_id] = seen
        deployment.status = "InProgress"
        if seen <= self.steps or (self.hold and not self.release.is_set()):
            return
        deployment.status = self.status
        if self.status == "Failed":
            deployment.scripted_error = {"code": self.error_code, "message": self.error_message}

    @staticmethod
    def deployment(deployment_id: str, account: str = "123456789012", region: str = "us-east-1") -> Any:
        """moto's stored deployment: the revision and description the engine sent."""
        from moto.codedeploy.models import codedeploy_backends

        return codedeploy_backends[account][region].deployments[deployment_id]

    @staticmethod
    def succeed_earlier(deployment_id: str, account: str = "123456789012", region: str = "us-east-1") -> None:
        """A deployment made outside the test's pipeline, marked Succeeded (the group's previous revision)."""
        CodeDeployScript.deployment(deployment_id, account, region).status = "Succeeded"
