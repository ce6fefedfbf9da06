"""Apply an ``update_mask`` to a stored resource, as UpdateTopic/UpdateSubscription do."""
from __future__ import annotations

from emulators.pubsub.errors import invalid

__all__ = ["apply_update"]


def apply_update(current, update, paths, allowed: frozenset[str], kind: str):
    """A copy of ``current`` with the masked fields taken from ``update``.

    ``paths`` must be non-empty and name only top-level fields in ``allowed``; an
    unset message field in ``update`` clears it (as in Pub/Sub).
    """
    paths = list(paths)
    if not paths:
        raise invalid(f"The update_mask of the {kind} update is empty: name the fields "
                      f"to change (one of {sorted(allowed)}).")
    result = type(current)()
    result.CopyFrom(current)
    fields = current.DESCRIPTOR.fields_by_name
    for path in paths:
        if path not in allowed:
            raise invalid(f"Invalid update_mask path {path!r} for a {kind}: it cannot "
                          f"be changed here. Updatable fields: {sorted(allowed)}.")
        field = fields[path]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(result, path)
            target.clear()
            target.update(getattr(update, path))
        elif field.message_type is not None:
            if update.HasField(path):
                getattr(result, path).CopyFrom(getattr(update, path))
            else:
                result.ClearField(path)
        else:
            setattr(result, path, getattr(update, path))
    return result
