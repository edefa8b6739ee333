"""The ``captions`` stage task: attributes per view and provider, merged and complemented, then captions.

Per triplet: every configured provider describes every configured view (RGB, NIR, TIR and the composite of the
three side by side); several answers for one view are merged by confidence (``best_of``); each modality is then
complemented from the other two modalities within what it can see (NEXT), and STMI's attributes are fused over all
views, the composite included, for the fused caption; captions are rendered from the NEXT template or written
by an LLM, and every caption is validated (an LLM caption that fails is regenerated once, then the triplet fails).
Length never fails a triplet: a caption longer than CLIP's 77 tokens is kept whole and noted, and tokenisation
truncates it (end-of-text kept) as the reference code does. An LLM caption that is too long is asked for once more,
shorter; a template caption is shortened only with ``captions.shorten_to_clip``.

A view that no provider answered validly (request failed, reply unusable) fails its triplet: no row, and one ledger
entry per such view naming the view, its image and each provider's reason. A row is never built from fewer views than
configured, because nothing downstream could tell: build-shards would train on the "unknown" attributes the missing
view left, while a missing row is excluded there (train) or refused (test, unless allowed), and rerun. Such failures
are retryable (``retry_on_rerun``): a plain rerun redoes their chunks, asking only the views not in the request cache
(unusable replies are never cached), so a rerun after the server is fixed gives the rows of a clean run. A view that
one provider answered while another failed keeps its row; the failure is in ``notes``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import numpy as np
import pyarrow as pa

from reidprep.captions.attributes import AttributeAnswer, AttributeQuery, View, composite_image
from reidprep.captions.backends.base import ChatRequest, RequestFailure, UsageCounter, requests_done
from reidprep.captions.merge import Merged, Target, best_of, complement, fuse_triplet, unknown_rate, visibility
from reidprep.captions.providers import Providers
from reidprep.captions.render import llm_fusion_prompt, render
from reidprep.captions.validate import CLIP_CONTEXT, clip_token_count, length_note, repair_caption, validate_caption
from reidprep.images import load_modality
from reidprep.masks.fusion import resize_mask
from reidprep.stage import Failure, StageTask, UnitResult, WorkUnit
from reidschemas import MODALITIES, AttributeSet, LedgerEntry, Modality, ObjectKind, attribute_model
from reidschemas.config import CaptionsConfig
from reidschemas.maskcodec import decode_mask

CAPTIONS_VERSION = 3  # 2: long captions kept (noted), token counts; 3: STMI fused set, NEXT presence complement
TARGETS: tuple[Target, ...] = (*MODALITIES, "fused")

CAPTIONS_SCHEMA = pa.schema(
    [
        pa.field("triplet_key", pa.string(), nullable=False),
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
    ]
    + [pa.field(f"caption_{t}", pa.string(), nullable=False) for t in TARGETS]
    + [pa.field(f"tokens_{t}", pa.int32(), nullable=False) for t in TARGETS]
    + [
        pa.field("attributes", pa.string()),
        pa.field("view_attributes", pa.string()),
    ]
    + [pa.field(f"unknown_before_{m}", pa.float32()) for m in MODALITIES]
    + [pa.field(f"unknown_after_{m}", pa.float32()) for m in MODALITIES]
    + [pa.field("notes", pa.string(), nullable=False)]
)
"""One row per triplet: a caption per modality (NEXT) and the fused triplet caption (STMI); ``attributes`` is the
CLIP tokens of each caption (start and end included; over 77 means truncated at tokenisation); ``attributes`` the
merged set per target as JSON ``{target: {name: {value, confidence, source}}}`` (null for imported captions);
``view_attributes`` the raw answers ``{view: {provider: {name: {value, confidence}}}}``; the unknown-attribute
rates per modality before and after fusion (attributes a modality cannot see are not counted); ``notes`` a JSON
list of repairs, failed views, regenerated, shortened and long captions."""


def _attribute_json(merged: Merged) -> dict[str, Any]:
    return {
        name: {"value": value.value, "confidence": value.confidence, "source": merged.sources.get(name)}
        for name, value in merged.attributes
    }


def _set_json(attributes: AttributeSet) -> dict[str, Any]:
    return {name: {"value": v.value, "confidence": v.confidence} for name, v in attributes}


def _length_notes(captions: dict[str, str], notes: list[str]) -> dict[str, int]:
    """CLIP tokens per target's caption; a note in ``notes`` for each caption longer than CLIP's context (kept)."""
    tokens: dict[str, int] = {target: clip_token_count(captions[target]) for target in TARGETS}
    for target in TARGETS:
        note = length_note(captions[target], tokens[target])
        if note is not None:
            notes.append(f"{target} caption: {note}")
    return tokens


@dataclass
class _Triplet:
    """Work in progress for one triplet of a chunk."""

    unit: WorkUnit
    kind: ObjectKind
    images: dict[Modality, np.ndarray]
    masks: dict[Modality, np.ndarray] | None
    answers: dict[View, dict[str, AttributeSet]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


PERMANENT_ERRORS = frozenset({"UnreadableImage", "MissingCaption", "InvalidCaption"})
"""Failures a plain rerun would only repeat: an image that does not load, a caption missing from the imported
release, a caption that fails validation (template captions are deterministic; an LLM's comes from the cache)."""


class CaptionsTask(StageTask):
    name = "captions"
    schema = CAPTIONS_SCHEMA

    def __init__(
        self,
        providers: Providers,
        config: CaptionsConfig,
        masks: dict[str, tuple[int, int, bytes]] | None = None,
        masks_fingerprint: str | None = None,
    ) -> None:
        self.providers = providers
        self.config = config
        self.masks = masks
        self.masks_fingerprint = masks_fingerprint
        self.fusion_usage = UsageCounter(usd_per_million=providers.fusion_prices)

    def identity(self) -> dict[str, Any]:
        c = self.config
        if self.providers.imported is not None:
            return {"providers": [self.providers.imported.identity()], "version": CAPTIONS_VERSION}
        return {
            "providers": [p.identity() for p in self.providers.attribute],
            "views": list(c.views),
            "fusion": c.fusion,
            "fusion_backend": None if self.providers.fusion is None else self.providers.fusion.identity(),
            "complement_below": c.complement_below,
            "colours_in_infrared_captions": c.colours_in_infrared_captions,
            "shorten_to_clip": c.shorten_to_clip,
            "masks": self.masks_fingerprint,
            "version": CAPTIONS_VERSION,
        }

    def inputs(self) -> dict[str, str | None]:
        return {"masks": self.masks_fingerprint}

    def retry_on_rerun(self, failure: LedgerEntry) -> bool:
        """Views without a valid answer (provider, network, unusable reply) are asked again by a plain rerun."""
        return failure.error_type not in PERMANENT_ERRORS

    # ------------------------------------------------------------------------------------------- processing
    def process(self, units: Sequence[WorkUnit]) -> list[UnitResult]:
        if self.providers.imported is not None:
            return [self._imported(unit) for unit in units]
        triplets = [self.load_triplet(unit) for unit in units]
        live = [t for t in triplets if not t.failures]
        self._describe(live)
        merged = {t.unit.key: self._merge(t) for t in live if not t.failures}
        captions = self._captions([t for t in live if not t.failures], merged)
        rows: list[UnitResult] = []
        for t in triplets:
            if t.failures:
                rows.append(t.failures)
            else:
                rows.append(self._row(t, merged[t.unit.key], captions[t.unit.key]))
        return rows

    def load_triplet(self, unit: WorkUnit) -> _Triplet:
        kind = unit.record.kind
        images: dict[Modality, np.ndarray] = {}
        for m in MODALITIES:
            try:
                images[m] = load_modality(unit.record, m)
            except (OSError, ValueError) as exc:
                triplet = _Triplet(unit, kind, {}, None)
                reason = f"cannot read an image: {type(exc).__name__}: {exc}"
                triplet.failures.append(Failure(unit.key, reason, "UnreadableImage", m))
                return triplet
        masks = None
        if self.masks is not None and unit.key in self.masks:
            height, width, data = self.masks[unit.key]
            mask = decode_mask(data, height, width)
            masks = {m: resize_mask(mask, *images[m].shape[:2]) for m in MODALITIES}
        return _Triplet(unit, kind, images, masks)

    def queries(self, t: _Triplet) -> list[AttributeQuery]:
        queries = []
        for view in self.config.views:
            if view == "composite":
                image = composite_image([t.images[m] for m in MODALITIES])
                mask = None
                if t.masks is not None:
                    parts = [t.masks[m].astype(np.uint8)[..., None].repeat(3, axis=2) * 255 for m in MODALITIES]
                    mask = composite_image(parts)[..., 0] > 127  # (H, W1 + W2 + W3)
            else:
                image, mask = t.images[view], None if t.masks is None else t.masks[view]
            queries.append(AttributeQuery(t.unit.key, view, t.kind, image, mask))
        return queries

    def _describe(self, triplets: list[_Triplet]) -> None:
        """Ask every provider about every view of the chunk at once (remote providers overlap requests); a view no
        provider answered is a failure of its triplet (ledgered with the view's image and every provider's reason),
        a provider's failure on a view another answered is a note."""
        queries = [(t, q) for t in triplets for q in self.queries(t)]
        failed: dict[tuple[str, View], list[RequestFailure]] = {}
        per_triplet = len(self.config.views) * len(self.providers.attribute)  # requests of one triplet
        for provider in self.providers.attribute:
            token = requests_done.set(lambda n: self.report_progress(n / per_triplet))
            try:
                answers = provider.describe([q for _, q in queries])
            finally:
                requests_done.reset(token)
            for (t, query), answer in zip(queries, answers, strict=True):
                if isinstance(answer, AttributeAnswer):
                    t.answers.setdefault(query.view, {})[provider.name] = answer.attributes
                    t.notes.extend(f"{provider.name}/{query.view}: repaired {r}" for r in answer.repairs)
                else:
                    reason = f"{provider.name}: {answer.error_type}: {answer.reason}"
                    failed.setdefault((t.unit.key, query.view), []).append(RequestFailure(reason, answer.error_type))
        for t in triplets:
            for view in self.config.views:
                failures = failed.get((t.unit.key, view), [])
                reasons = "; ".join(f.reason for f in failures)
                if view in t.answers:
                    if failures:
                        t.notes.append(f"{view}: {reasons} (answered by {', '.join(t.answers[view])})")
                    continue
                error_type = failures[0].error_type if failures else "NoAnswer"
                modality = view if view in MODALITIES else None  # the composite is all three: the rgb path
                reason = f"{view} view: no valid answer ({reasons or 'no provider answered'})"
                t.failures.append(Failure(t.unit.key, reason, error_type, modality))

    def _merge(self, t: _Triplet) -> dict[str, Merged]:
        per_view = {view: best_of(list(sets.values())) for view, sets in t.answers.items()}
        complemented = complement(
            per_view,
            t.kind,
            below=self.config.complement_below,
            colours_in_infrared=self.config.colours_in_infrared_captions,
        )
        merged: dict[str, Merged] = {view: value for view, value in complemented.items()}
        merged["fused"] = fuse_triplet(per_view)
        return merged

    def _colours(self, target: str) -> bool | None:
        return self.config.colours_in_infrared_captions if target in ("nir", "tir") else None

    def _captions(self, triplets: list[_Triplet], merged: dict[str, dict[str, Merged]]) -> dict[str, dict[str, str]]:
        """Captions per triplet and target; a triplet whose captions fail validation gets a failure.

        Length is not validation: a long caption is kept (``_row`` notes it).
        """
        out: dict[str, dict[str, str]] = {t.unit.key: {} for t in triplets}
        jobs = [(t, target) for t in triplets for target in TARGETS]
        if self.providers.fusion is None:
            limit = CLIP_CONTEXT if self.config.shorten_to_clip else None
            for t, target in jobs:
                rendered = render(
                    merged[t.unit.key][target], t.kind, target, colours=self._colours(target), max_tokens=limit
                )
                out[t.unit.key][target] = rendered.text
                if rendered.dropped:
                    t.notes.append(
                        f"{target} caption shortened to {rendered.tokens} CLIP tokens: left out "
                        + ", ".join(rendered.dropped)
                    )
        else:
            self._llm_captions(jobs, merged, out)
        for t, target in jobs:
            problems = self._problems(out[t.unit.key][target], merged, t, target)
            if problems and not t.failures:
                # a template caption is deterministic (permanent); an LLM's may come out valid when asked again
                error = "InvalidCaption" if self.providers.fusion is None else "InvalidLLMCaption"
                t.failures.append(Failure(t.unit.key, f"{target} caption invalid: {'; '.join(problems)}", error))
        return out

    def _llm_captions(
        self,
        jobs: list[tuple[_Triplet, Target]],
        merged: dict[str, dict[str, Merged]],
        out: dict[str, dict[str, str]],
    ) -> None:
        """Ask the fusion LLM for every caption; an invalid one is asked for again once, and so is one longer than
        CLIP's context (for a shorter one). A shorter caption that comes back invalid is dropped for the first."""
        prompts: dict[tuple[str, str], str] = {
            (t.unit.key, tg): llm_fusion_prompt(merged[t.unit.key][tg], t.kind, target=tg) for t, tg in jobs
        }
        check = partial(self._fusion_problems, merged=merged, triplets={t.unit.key: t for t, _ in jobs})
        texts = self._ask(prompts, check=check)
        first = dict(texts)
        retry: dict[tuple[str, str], str] = {}
        for t, target in jobs:
            key = (t.unit.key, target)
            problems = self._problems(texts[key], merged, t, target)
            if problems:
                retry[key] = (
                    prompts[key] + f"\n\nYour previous caption was rejected ({'; '.join(problems)}). Write it again, "
                    "following the template and using only the attributes above."
                )
                t.notes.append(f"{target} caption regenerated: {'; '.join(problems)}")
                continue
            tokens = clip_token_count(texts[key])
            if tokens > CLIP_CONTEXT:
                retry[key] = (
                    prompts[key] + f"\n\nYour previous caption was {tokens} CLIP tokens long; the text encoder reads "
                    f"at most {CLIP_CONTEXT}. Write a shorter caption (about 50 words), following the template and "
                    "using only the attributes above, most distinctive first."
                )
                t.notes.append(f"{target} caption of {tokens} CLIP tokens: asked once for a shorter one")
        failed: dict[tuple[str, str], RequestFailure] = {}
        texts.update(self._ask(retry, failed, check=check))
        for t, target in jobs:
            key = (t.unit.key, target)
            if key in retry and not self._problems(first[key], merged, t, target):
                problems = self._problems(texts[key], merged, t, target)
                if problems:  # the shorter caption is worse than the long one: keep the long one
                    texts[key] = first[key]
                    t.notes.append(f"{target} shorter caption rejected ({'; '.join(problems)}): kept the first")
            if key in failed and not texts[key] and not t.failures:  # a provider error, retryable (not invalid)
                reason = f"{target} caption: the fusion LLM's request failed: {failed[key].reason}"
                t.failures.append(Failure(t.unit.key, reason, failed[key].error_type))
            out[t.unit.key][target] = texts[key]

    def _problems(self, text: str, merged: dict[str, dict[str, Merged]], t: _Triplet, target: Target) -> list[str]:
        attributes = merged[t.unit.key][target].attributes
        return validate_caption(text, attributes, t.kind, target, colours=self._colours(target))

    def _fusion_problems(
        self, key: tuple[str, str], text: str, *, merged: dict[str, dict[str, Merged]], triplets: dict[str, _Triplet]
    ) -> None:
        """``ChatRequest.accept`` of a fusion caption: raises ValueError when the caption fails validation, so the
        request cache never keeps an invalid caption (a rerun asks again instead of replaying it)."""
        problems = self._problems(repair_caption(text), merged, triplets[key[0]], cast(Target, key[1]))
        if problems:
            raise ValueError("; ".join(problems))

    def _ask(
        self,
        prompts: dict[tuple[str, str], str],
        failed: dict[tuple[str, str], RequestFailure] | None = None,
        check: Callable[[tuple[str, str], str], None] | None = None,
    ) -> dict[tuple[str, str], str]:
        """Send caption prompts to the fusion LLM; a failed request gives an empty caption (then invalid), and its
        failure in ``failed``. ``check`` (key, text) raises ValueError for a caption the cache must not keep."""
        if not prompts:
            return {}
        assert self.providers.fusion is not None
        keys = list(prompts)
        requests = [
            ChatRequest(prompt=prompts[k], max_tokens=200, accept=None if check is None else partial(check, k))
            for k in keys
        ]
        replies = self.providers.fusion.generate(requests)
        texts = {}
        for key, reply in zip(keys, replies, strict=True):
            self.fusion_usage.add(self.providers.fusion.model, reply)
            texts[key] = "" if isinstance(reply, RequestFailure) else repair_caption(reply.text)
            if isinstance(reply, RequestFailure) and failed is not None:
                failed[key] = reply
        return texts

    # ------------------------------------------------------------------------------------------------- rows
    def _row(self, t: _Triplet, merged: dict[str, Merged], captions: dict[str, str]) -> UnitResult:
        if t.failures:
            return t.failures
        rules = visibility(t.kind)
        tokens = _length_notes(captions, t.notes)
        row: dict[str, Any] = {
            "triplet_key": t.unit.key,
            "sample_id": t.unit.record.sample_id,
            "kind": t.kind,
            **{f"caption_{target}": captions[target] for target in TARGETS},
            **{f"tokens_{target}": tokens[target] for target in TARGETS},
            "attributes": json.dumps({target: _attribute_json(merged[target]) for target in TARGETS}),
            "view_attributes": json.dumps(
                {view: {p: _set_json(s) for p, s in sets.items()} for view, sets in t.answers.items()}
            ),
            "notes": json.dumps(t.notes),
        }
        for m in MODALITIES:
            hidden = rules.hidden(m, colours=bool(self._colours(m)))
            own = t.answers.get(m)
            row[f"unknown_before_{m}"] = (
                None if own is None else unknown_rate([best_of(list(own.values()))], ignore=hidden)
            )
            row[f"unknown_after_{m}"] = unknown_rate([merged[m].attributes], ignore=hidden)
        return row

    def _imported(self, unit: WorkUnit) -> dict[str, Any] | Failure:
        assert self.providers.imported is not None
        try:
            captions: dict[str, str] = {m: text for m, text in self.providers.imported.lookup(unit.record).items()}
        except KeyError as exc:
            return Failure(unit.key, str(exc.args[0]), "MissingCaption")
        captions["fused"] = captions["rgb"]
        kind = unit.record.kind
        unknown = attribute_model(kind).unknown()
        notes = [
            f"{target}: {problem}"
            for target in MODALITIES
            for problem in validate_caption(captions[target], unknown, kind, target)
        ]
        tokens = _length_notes(captions, notes)
        return {
            "triplet_key": unit.key,
            "sample_id": unit.record.sample_id,
            "kind": kind,
            **{f"caption_{target}": captions[target] for target in TARGETS},
            **{f"tokens_{target}": tokens[target] for target in TARGETS},
            "attributes": None,
            "view_attributes": None,
            **{f"unknown_{when}_{m}": None for when in ("before", "after") for m in MODALITIES},
            "notes": json.dumps(notes),
        }
