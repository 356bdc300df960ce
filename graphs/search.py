"""The RZ-NAS search graph, and the ``python -m graphs.search`` entry point.

::

    init_population -> select_parents -(Send x K)-> mutate[design <-> design, evaluate, reflect] -> update
                            ^                                                                        |
                            +------ steer (a pause for a human with --interactive) <- until a stop --+

``graph`` is the compiled graph without a checkpointer (tests and LangGraph tooling drive it with a
:class:`graphs.nodes.SearchContext`); the CLI compiles it again with a SQLite checkpointer.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from graphs import nodes
from graphs.state import BranchOutput, BranchState, SearchState


def build_mutation_graph() -> CompiledStateGraph:
    """Return one mutation branch: design (retried while invalid) -> evaluate -> reflect."""
    builder = StateGraph(BranchState, context_schema=nodes.SearchContext, output_schema=BranchOutput)
    builder.add_node("design", nodes.design)
    builder.add_node("evaluate", nodes.evaluate)
    builder.add_node("reflect", nodes.reflect)
    builder.add_edge(START, "design")
    builder.add_conditional_edges("design", nodes.route_after_design, ["design", "evaluate"])
    builder.add_edge("evaluate", "reflect")
    builder.add_edge("reflect", END)
    return builder.compile()


def build_graph(checkpointer: Checkpointer = None) -> CompiledStateGraph:
    """Return the compiled search graph, persisting state after every step when given a checkpointer."""
    builder = StateGraph(SearchState, context_schema=nodes.SearchContext)
    builder.add_node("init_population", nodes.init_population)
    builder.add_node("select_parents", nodes.select_parents, destinations=("mutate",))
    builder.add_node("mutate", build_mutation_graph())
    builder.add_node("update", nodes.update)
    builder.add_node("steer", nodes.steer)
    builder.add_edge(START, "init_population")
    builder.add_edge("init_population", "select_parents")
    builder.add_edge("mutate", "update")
    builder.add_conditional_edges("update", nodes.route_after_update, ["steer", END])
    builder.add_conditional_edges("steer", nodes.route_after_steer, ["select_parents", END])
    return builder.compile(checkpointer=checkpointer, name="rz-nas")


graph = build_graph()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI (see ``python -m graphs.search --help``) and return its exit code."""
    from graphs.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
