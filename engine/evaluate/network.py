"""A model of the alpha network durable-rules builds from our patterns, to check its limits.

durable-rules (rete.c) matches a fact by a depth-first walk of its alpha network with a fixed
stack of 64 entries (events.c, handleAlpha): popping a node pushes every child that matches, so
the stack peaks at the sum, along one path, of the siblings still waiting. More than 64 gives
error 303 at assert time. Here the network is rebuilt the way rete.c builds it (createAlpha,
findAlpha): `$and` chains, `$or` branches joined by a fresh forward node, and identical tests
(attribute, operator, value) under one parent merged. The worst case counts every child as
matching, except that equality tests of one attribute against different values cannot match
together. Forward nodes and `$nex` tests sit in a parent's "next list" (at most 128 each).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

NEXT_LIST_LIMIT = 120  # rete.c NEXT_LIST_LENGTH is 128; 129 `$nex` children raise error 107
CHILD_LIMIT = 500  # more than 512 distinct children of one node hang create_ruleset


@dataclass
class Node:
    """An alpha node: its test, its merged children and its next list (`$nex`, forward)."""

    test: tuple[str, str, str]  # attribute, operator, canonical value
    children: dict[tuple[str, str, str], Node] = field(default_factory=dict)
    next_list: list[Node] = field(default_factory=list)

    def child(self, test: tuple[str, str, str]) -> Node:
        """findAlpha: reuse an identical test under this parent, or add one."""
        if test[1] == "$nex":
            for node in self.next_list:
                if node.test == test:
                    return node
            node = Node(test)
            self.next_list.append(node)
            return node
        if test[2].startswith("{"):  # an expression ($m): never merged, counted on its own
            node = Node(test)
            self.children[(*test[:2], f"{test[2]}#{len(self.children)}")] = node
            return node
        return self.children.setdefault(test, Node(test))


_FORWARD = ("", "forward", "")


def alpha_key(leaf: dict[str, Any]) -> tuple[str, str, str]:
    """The (attribute, operator, canonical value) an alpha node tests, for one test pattern."""
    ((key, value),) = leaf.items()
    if key.startswith("$"):
        ((attribute, operand),) = value.items()
        return (attribute, key, json.dumps(operand, sort_keys=True))
    return (key, "$eq", json.dumps(value, sort_keys=True))


def add_pattern(parent: Node, pattern: dict[str, Any]) -> Node:
    """Add one pattern below parent as createAlpha does; return its last node."""
    ((key, value),) = pattern.items()
    if key == "$and":
        node = parent
        for part in value:
            node = add_pattern(node, part)
        return node
    if key == "$or":
        forward = Node(_FORWARD)
        for branch in value:
            add_pattern(parent, branch).next_list.append(forward)
        return forward
    return parent.child(alpha_key(pattern))


def stack_bound(node: Node, memo: dict[int, int] | None = None) -> int:
    """Worst-case peak of durable-rules' DFS stack while matching below (and including) node."""
    memo = {} if memo is None else memo
    if id(node) in memo:
        return memo[id(node)]
    children = [*node.children.values(), *node.next_list]
    if not children:
        memo[id(node)] = 1
        return 1
    # equalities with a constant: an attribute has one value, so only the nodes testing that
    # value can match (3 and 3.0 are separate nodes that both match); others can all match
    same_value: dict[tuple[str, object], int] = {}
    others = 0
    for c in children:
        constant = c.test[1] == "$eq" and not c.test[2].startswith("{")
        if constant:
            value: object = json.loads(c.test[2])
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = float(value)
            key = (c.test[0], value)
            same_value[key] = same_value.get(key, 0) + 1
        else:
            others += 1
    per_attribute: dict[str, int] = {}
    for (attribute, _), count in same_value.items():
        per_attribute[attribute] = max(per_attribute.get(attribute, 0), count)
    matching = others + sum(per_attribute.values())
    result = matching - 1 + max(stack_bound(c, memo) for c in children)
    memo[id(node)] = max(result, 1)
    return memo[id(node)]


def limit_problems(root: Node) -> list[str]:
    """Next lists or child tables larger than durable-rules takes, anywhere in the network."""
    problems: list[str] = []
    seen: set[int] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if len(node.next_list) > NEXT_LIST_LIMIT:
            problems.append(f"{len(node.next_list)} '$nex'/or-join children under {node.test}")
        if len(node.children) > CHILD_LIMIT:
            problems.append(f"{len(node.children)} children under {node.test}")
        pending.extend(node.children.values())
        pending.extend(node.next_list)
    return problems
