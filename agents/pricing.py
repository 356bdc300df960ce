"""Prices of chat models in USD per million input/output tokens, for cost accounting.

Built-in figures are OpenAI's published list prices for a few common models (standard tier,
no cached-input discount). Local, fake and openai-compatible models cost 0 unless a price is
given. Override or extend the table with a dict passed to ``load_chat_model(prices=...)`` or a
JSON file named by ``$RZNAS_PRICES``; both use the same shape::

    {"gpt-4o": {"input": 2.5, "output": 10.0}, "openai-compatible:http://h:8000/v1:m": [0.2, 0.6]}
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Price:
    """USD per one million tokens."""

    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Return the cost in USD of one call."""
        return (input_tokens * self.input + output_tokens * self.output) / 1e6


FREE = Price(0.0, 0.0)

# OpenAI list prices (USD / 1M tokens), standard tier.
BUILTIN_PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-2024-05-13": Price(5.00, 15.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
}

_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


class PriceTableError(ValueError):
    """A price override (dict or ``$RZNAS_PRICES`` file) is malformed."""


def _to_price(key: str, value: object, origin: str) -> Price:
    if isinstance(value, dict) and set(value) == {"input", "output"}:
        pair = (value["input"], value["output"])
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        pair = tuple(value)
    else:
        raise PriceTableError(
            f'{origin}: price for {key!r} must be {{"input": x, "output": y}} or [x, y] '
            f"(USD per 1M tokens), got {value!r}"
        )
    try:
        price = Price(float(pair[0]), float(pair[1]))
    except (TypeError, ValueError):
        raise PriceTableError(
            f"{origin}: price for {key!r} must be numbers, got {value!r}"
        ) from None
    if price.input < 0 or price.output < 0:
        raise PriceTableError(f"{origin}: price for {key!r} must not be negative, got {value!r}")
    return price


def load_price_overrides(prices: dict | None = None) -> dict[str, Price]:
    """Return user prices: ``$RZNAS_PRICES`` (a JSON file) updated by ``prices``.

    Raises:
        PriceTableError: the file cannot be read or an entry is malformed.
    """
    table: dict[str, Price] = {}
    if env_path := os.environ.get("RZNAS_PRICES"):
        origin = f"RZNAS_PRICES={env_path}"
        try:
            data = json.loads(Path(env_path).expanduser().read_text())
        except (OSError, ValueError) as exc:
            raise PriceTableError(f"{origin}: cannot read a JSON price table ({exc})") from None
        if not isinstance(data, dict):
            raise PriceTableError(f"{origin}: expected a JSON object of model -> price")
        table.update({k: _to_price(k, v, origin) for k, v in data.items()})
    if prices:
        table.update({k: _to_price(k, v, "prices") for k, v in prices.items()})
    return table


def price_for(name: str, model: str, *, billed: bool, overrides: dict[str, Price]) -> Price | None:
    """Return the price of a model, or None when it is billed but its price is unknown.

    User overrides are looked up by the full resolved name (``openai:gpt-4o``), the bare model id,
    then the id without a date suffix (``gpt-4o-2024-08-06`` -> ``gpt-4o``); the built-in table
    applies to billed providers only. Local, fake and self-hosted models cost nothing unless
    overridden.
    """
    keys = (name, model, _DATE_SUFFIX.sub("", model))
    for key in keys:
        if key in overrides:
            return overrides[key]
    if not billed:
        return FREE
    for key in keys[1:]:
        if key in BUILTIN_PRICES:
            return BUILTIN_PRICES[key]
    return None
