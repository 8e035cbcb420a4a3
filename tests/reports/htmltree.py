"""A tiny HTML tree on the standard library's parser, enough to query the reports in tests."""
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "hr", "img", "input", "link", "meta", "source", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list["Node | str"] = field(default_factory=list)

    def iter(self) -> Iterator["Node"]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def select(self, tag: str | None = None, cls: str | None = None, **attrs: str | bool) -> list["Node"]:
        """Descendants by tag, class and attributes (data_x= matches data-x; True = present)."""
        def hit(n: Node) -> bool:
            if tag and n.tag != tag or cls and cls not in n.attrs.get("class", "").split():
                return False
            return all((k.replace("_", "-") in n.attrs) if v is True else n.attrs.get(k.replace("_", "-")) == v
                       for k, v in attrs.items())
        return [n for n in self.iter() if n is not self and hit(n)]

    def one(self, tag: str | None = None, cls: str | None = None, **attrs: str | bool) -> "Node":
        found = self.select(tag, cls, **attrs)
        assert len(found) == 1, f"expected one <{tag} class={cls} {attrs}>, found {len(found)}"
        return found[0]


class _Builder(HTMLParser):
    """Keeps <svg> elements but not what they draw: a site page has ~100,000 chart nodes, which the
    browser tests look at; these tests only need the page around them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]
        self.svg_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.svg_depth:
            self.svg_depth += 1
            return
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag == "svg":
            self.svg_depth = 1
        elif tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self.svg_depth:
            self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if self.svg_depth:
            self.svg_depth -= 1
            return
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        if not self.svg_depth:
            self.stack[-1].children.append(data)


def parse(text: str) -> Node:
    builder = _Builder()
    builder.feed(text)
    builder.close()
    return builder.root
