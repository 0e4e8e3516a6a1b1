"""Moving nested simulation state between devices (checkpoints are written from the CPU)."""

from __future__ import annotations

import dataclasses

import torch


def to_device(value, device: str | torch.device):
    """A copy of ``value`` with every tensor moved to ``device``.

    Walks dicts, lists, tuples and dataclass instances (such as a generator's per-system VAEs);
    other values are returned as they are. Tensors already on ``device`` are not copied.
    """
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, dict):
        return {key: to_device(item, device) for key, item in value.items()}
    if isinstance(value, list | tuple):
        items = [to_device(item, device) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            field.name: to_device(getattr(value, field.name), device)
            for field in dataclasses.fields(value)
            if field.init
        }
        return dataclasses.replace(value, **changes)
    return value
