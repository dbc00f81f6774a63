"""How every lab command reads `--outcomes`: one or several tables, prices for token counts, and
models with no answers named instead of failing somewhere deep in a sweep."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from gearshift.config import Price
from gearshift.errors import ConfigError
from gearshift.outcomes import Outcomes, concat, datasets

F = TypeVar("F", bound=Callable[..., Any])
_PRICE = re.compile(r"^(?P<model>.+)=(?P<input>[0-9.eE+-]+),(?P<output>[0-9.eE+-]+)$")


def prices_option(f: F) -> F:
    """`--prices MODEL=IN,OUT` (repeatable): USD per 1M tokens, for outcomes with token counts and no cost."""
    return click.option("--prices", "prices", multiple=True, metavar="MODEL=IN,OUT",
                        help="USD per 1M input,output tokens for a model whose outcomes give tokens but no cost "
                             "(repeatable; --config's model prices are used too)")(f)


def drop_contaminated_option(f: F) -> F:
    """`--drop-contaminated`: leave out the prompts RouteLLM drops, to compare with its published figures."""
    return click.option("--drop-contaminated", is_flag=True,
                        help="drop RouteLLM's contaminated prompts (routellm/* only)")(f)


def bootstrap_options(f: F) -> F:
    """`--n-boot` and `--alpha`: the bootstrap behind every interval the lab prints."""
    f = click.option("--alpha", default=0.05, show_default=True, type=click.FloatRange(0.0, 0.5, min_open=True),
                     help="intervals are at 1 - alpha")(f)
    return click.option("--n-boot", default=1000, show_default=True, type=click.IntRange(10),
                        help="bootstrap resamples")(f)


def price_table(prices: Sequence[str], config_path: str | None = None) -> dict[str, Price]:
    """Prices from `--prices` entries, over those of the config's models (by name and replay column)."""
    table: dict[str, Price] = {}
    if config_path:
        from gearshift.config import load_config

        try:
            config = load_config(config_path)
        except ConfigError as e:
            raise click.UsageError(str(e)) from None
        for name, m in config.models.items():
            table[name] = m.price
            if m.replay is not None:
                table.setdefault(m.replay.column, m.price)
    for entry in prices:
        match = _PRICE.match(entry)
        if match is None:
            raise click.UsageError(f"--prices {entry!r}: write MODEL=INPUT,OUTPUT in USD per 1M tokens, "
                                   "e.g. gpt-4o=2.5,10")
        try:
            table[match["model"]] = Price(input=float(match["input"]), output=float(match["output"]))
        except ValueError as e:
            raise click.UsageError(f"--prices {entry!r}: {e}") from None
    return table


def load_outcomes(specs: Sequence[str], *, drop_contaminated: bool = False, prices: dict[str, Price] | None = None,
                  named: Sequence[str | None] = (), base_dir: str = ".") -> Outcomes:
    """The tables `specs` names, one after another; models without a single answer are left out, said so.

    `named` are models the user asked for by name (--weak, --strong): one without answers is an error."""
    tables = []
    for spec in specs:
        try:
            tables.append(datasets.load(spec, base_dir=base_dir, drop_contaminated=drop_contaminated, prices=prices))
        except (ValueError, FileNotFoundError, KeyError) as e:
            raise click.UsageError(str(e.args[0] if isinstance(e, KeyError) else e)) from None
    o = concat(tables)
    empty = o.unanswered()
    for m in named:
        if m is not None and m in empty:
            raise click.UsageError(f"model {m!r} has no quality on any prompt of {o.name}: nothing can be measured "
                                   f"for it; name a model with answers ({[x for x in o.models if x not in empty]})")
    if empty:
        click.echo(f"note: {', '.join(map(repr, empty))} {'has' if len(empty) == 1 else 'have'} no quality on any "
                   f"prompt of {o.name}: left out", err=True)
        kept = [m for m in o.models if m not in empty]
        if len(kept) < 2:
            raise click.UsageError(f"{o.name}: fewer than two models have answers ({kept}); nothing to route between")
        o = o.select_models(kept)
    return o
