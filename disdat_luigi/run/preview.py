"""What an apply will do before its remote tasks run, for `--explain`: the images it will build or
push (and why) and the AWS Batch job definitions it will register or reuse. Nothing is changed."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace

from disdat_luigi.apply.executors import LOCAL
from disdat_luigi.apply.plan import Decision
from disdat_luigi.config import Settings
from disdat_luigi.dockerize.images import plan_image
from disdat_luigi.dockerize.naming import find_pipe_root, image_name, module_of
from disdat_luigi.run.request import ContainerJob
from disdat_luigi.store.context import LocalContext


def preparation(decisions: Sequence[Decision], settings: Settings, context: LocalContext) -> list[str]:
    """One line per image and per job definition the tasks that will run remotely need."""
    from disdat_luigi.run.executors.batch import BatchExecutor, probe

    lines: list[str] = []
    seen_images: set[tuple[str, bool]] = set()
    seen_definitions: set[str] = set()
    for decision in decisions:
        if decision.reuse or decision.executor == LOCAL or not decision.pipe_cls:
            continue
        config = settings.executor(decision.executor)
        if not config.remote:
            continue
        push = config.type == "aws_batch"
        module, cls_name = module_of(decision.pipe_cls)
        name = image_name(module, settings.docker.repository_prefix)
        root = find_pipe_root(module, settings.dockerize.pipe_root)
        if root is None:
            lines.append(f"image {name}: its project cannot be found to check it; set [dockerize] pipe_root")
            continue
        planned = plan_image(root, decision.pipe_cls, settings, push)
        if (name, push) not in seen_images:
            seen_images.add((name, push))
            lines.append(planned.describe())
        if not push:
            continue
        cls = getattr(sys.modules[module], cls_name)
        executor = BatchExecutor(settings=settings, config=config, context=context, build=True)
        executor.environments_of([cls])
        request = executor.run_request(probe(cls))
        reference = f"{settings.docker.registry}/{name}:{planned.content_tag}"
        job = ContainerJob(image=reference, image_name=name, command=(), environment={})
        definition = executor.job_definition(replace(request, no_submit=True), job, register=False)
        resources = executor.resources(request)
        what = f"{definition['jobDefinitionName']} ({resources.vcpus} vCPU, {resources.memory} MiB)"
        if what in seen_definitions:
            continue
        seen_definitions.add(what)
        if "revision" in definition:
            lines.append(f"job definition {what}: reuses revision {definition['revision']}")
        else:
            lines.append(f"job definition {what}: will be registered (for image {planned.content_tag})")
    return lines
