"""The teacher protocol and the prompt state every backend renders.

A teacher is anything with ``async complete(state, n) -> TeacherReply``: given where a search path
stands, return ``n`` continuations (one reasoning step, a tool call or a final answer each). The search
never knows which backend it talks to.

Prompt states are append-only along a path: a child's state is its parent's plus the parent's step
(and the observation the environment returned for it, in the multi-turn variant), so a server's prefix
cache serves every sibling and descendant. Images are resized and encoded ONCE per sample
(:class:`PromptContext`) and referenced, never re-encoded, by every state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..frame import Frame
from ..grounding import ANSWER_OPEN, CHAIN_STOPS, IMAGE_MARKER, STEP_STOPS
from ..samples import EncodedImage, Sample
from ..tasks.base import CONTINUE_PROMPT, FORCE_ANSWER_PROMPT, Task


@dataclass(frozen=True)
class StepObservation:
    """What the environment shows after a step (multi-turn zoom: a crop). ``text`` marks where each
    image goes with ``<image>`` (images first when it has no marker)."""

    text: str
    images: tuple[EncodedImage, ...] = ()


@dataclass(frozen=True)
class Turn:
    """One assistant response on the path (complete text, closing tag included) and its observation."""

    text: str
    observation: StepObservation | None = None


@dataclass(eq=False)
class PromptContext:
    """Per-sample state shared by every prompt of its tree: encoded images, frames, prompt texts."""

    sample: Sample
    # None = no system message (the serving chat template applies its default); "" = an empty system
    # message; see ``protocol.resolve_system_prompt``
    system: str | None
    user_text: str
    images: tuple[EncodedImage, ...]
    truth: dict[str, Any]  # the task's ground truth (frame coordinates), for the verifier
    hint_boxes: list[dict[str, Any]] = field(default_factory=list)  # frame coords; sim teacher + reports
    task: Task | None = None
    stop: tuple[str, ...] = STEP_STOPS  # what ends one teacher response
    multiturn: bool = False  # steps end in a zoom tool call and observations follow them
    frame_images: tuple[Any, ...] = ()  # the resized PIL images (the multi-turn environment crops them)
    # Message JSON that never changes for this sample (system + user turn), rendered once by a backend.
    cache: dict[str, Any] = field(default_factory=dict)
    # The last allowed step (``PromptState.forced``): what a ``continue``-style request pre-fills, and the
    # user turn a ``plain``-style request ends with (None = the built-in one); ``protocol.final_turn``
    final_prefill: str = ANSWER_OPEN
    final_user_text: str | None = None

    @property
    def frame(self) -> Frame:
        return self.images[0].frame


@dataclass(frozen=True)
class PromptState:
    context: PromptContext
    turns: tuple[Turn, ...] = ()
    force_answer: bool = False  # the last allowed step: the reply must be the final answer
    # A one-shot reply (eval, single pass): the whole chain ``<think> … </think><answer> … </answer>`` in ONE
    # reply, so a backend must stop only at ``</answer>`` (see ``stop_sequences``), never at ``</think>``.
    one_shot: bool = False

    def child(self, turn: Turn) -> PromptState:
        return PromptState(self.context, self.turns + (turn,), False)

    def forced(self) -> PromptState:
        return PromptState(self.context, self.turns, True)


def stop_sequences(state: PromptState) -> tuple[str, ...]:
    """What ends one reply: the context's step stops (``</think>``/``</answer>``, or ``</tool_call>``/
    ``</answer>`` in the multi-turn variant), or a one-shot chain's (``grounding.CHAIN_STOPS``, the trainer's too)."""
    return CHAIN_STOPS if state.one_shot else state.context.stop


@dataclass(frozen=True)
class Continuation:
    text: str  # as generated, stop string re-attached, forced prefix included
    finish_reason: str  # stop | length | ...
    completion_tokens: int = 0
    # Sum of the sampled tokens' log-probabilities (the server's, when the request asked for them and the
    # server returned them; None otherwise). The search turns siblings' values into PUCT priors.
    logprob: float | None = None


@dataclass(frozen=True)
class TeacherReply:
    choices: list[Continuation]
    prompt_tokens: int = 0
    latency_s: float = 0.0


class TeacherError(RuntimeError):
    """A request that failed after the client's retries (the sample fails; the run goes on)."""


class TeacherUnavailable(RuntimeError):
    """The teacher cannot serve at all (unreachable server, unknown model): stop before any work."""


@runtime_checkable
class Teacher(Protocol):
    name: str

    async def complete(self, state: PromptState, n: int) -> TeacherReply: ...

    async def check(self) -> None:
        """Raise :class:`TeacherUnavailable` with a one-line reason if the teacher cannot serve."""
        ...

    async def aclose(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What this teacher is, for the run config (no secrets)."""
        ...


def observes_inline(teacher: Any) -> bool:
    """Whether an environment step (a multi-turn crop) must run on the event loop for ``teacher``.

    True for a teacher that sets ``replays_in_order`` (the seeded ``sim``: its replies depend on the
    order of requests, so a worker thread's finishing moment must not reorder them); real teachers
    get the crop on a worker thread, off the event loop."""
    return bool(getattr(teacher, "replays_in_order", False))


# --------------------------------------------------------------------------------------------
# Rendering a prompt state as chat messages (OpenAI format), shared by the HTTP and vLLM backends
# --------------------------------------------------------------------------------------------


def image_part(img: EncodedImage) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": img.data_url}}


def system_messages(system: str | None) -> list[dict[str, Any]]:
    """The system message as sent: none for ``None`` (the chat template's default applies), else one
    message with ``system`` as its text (``""`` = an empty system message)."""
    return [] if system is None else [{"role": "system", "content": system}]


def head_messages(ctx: PromptContext) -> list[dict[str, Any]]:
    """System (unless ``ctx.system`` is None) + first user turn (images then question). Constant per sample."""
    content: list[dict[str, Any]] = [image_part(img) for img in ctx.images]
    content.append({"type": "text", "text": ctx.user_text})
    return system_messages(ctx.system) + [{"role": "user", "content": content}]


def _observation_message(obs: StepObservation) -> dict[str, Any]:
    pieces = obs.text.split(IMAGE_MARKER)
    if len(pieces) == 1:
        pieces = [""] * len(obs.images) + pieces
    content: list[dict[str, Any]] = []
    images = list(obs.images)
    for i, piece in enumerate(pieces):
        if piece.strip():
            content.append({"type": "text", "text": piece})
        if i < len(pieces) - 1 and images:
            content.append(image_part(images.pop(0)))
    content.extend(image_part(img) for img in images)
    return {"role": "user", "content": content}


def tail_messages(state: PromptState, style: str) -> tuple[list[dict[str, Any]], bool, str]:
    """The path after the head, as messages. Returns ``(messages, continue_final, prefill)``.

    ``continue``: steps since the last observation are joined into ONE final assistant message that
    the server continues (vLLM ``continue_final_message``); a forced answer pre-fills ``<answer>``.
    ``plain``: every step is its own assistant message followed by a user turn (its observation, or a
    short "continue" line), for servers that cannot continue a message.
    """
    msgs: list[dict[str, Any]] = []
    prefill = state.context.final_prefill if (state.force_answer and style == "continue") else ""
    if style == "plain":
        for turn in state.turns:
            msgs.append({"role": "assistant", "content": turn.text})
            msgs.append(_observation_message(turn.observation) if turn.observation else {"role": "user", "content": CONTINUE_PROMPT})
        if state.force_answer:
            force = state.context.final_user_text or FORCE_ANSWER_PROMPT
            if msgs and msgs[-1]["role"] == "user" and msgs[-1]["content"] == CONTINUE_PROMPT:
                msgs[-1] = {"role": "user", "content": force}
            else:
                msgs.append({"role": "user", "content": force})
        return msgs, False, ""
    if style != "continue":
        raise ValueError(f"unknown prompt_style {style!r} (continue or plain)")
    pending: list[str] = []
    for turn in state.turns:
        pending.append(turn.text)
        if turn.observation is not None:
            msgs.append({"role": "assistant", "content": "\n".join(pending)})
            msgs.append(_observation_message(turn.observation))
            pending = []
    if pending or prefill:
        text = "\n".join(pending)
        if prefill:
            text = f"{text}\n{prefill}" if text else prefill
        msgs.append({"role": "assistant", "content": text})
        return msgs, True, prefill
    return msgs, False, ""


def build_messages(state: PromptState, style: str) -> tuple[list[dict[str, Any]], bool, str]:
    tail, cont, prefill = tail_messages(state, style)
    return head_messages(state.context) + tail, cont, prefill
