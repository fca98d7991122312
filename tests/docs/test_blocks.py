"""The docs-block parser: files, commands, continued lines, ``# prints:`` and includes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.docs.blocks import Block, commands, parse

PAGE = """# Title

```sh
mkdir x && cd x   # a trailing comment stays
# a comment line is not a command
rpckit call http://h/S/M \\
  -d '{"a": 1}'
# prints: {"b":2}
# prints: done
```

```proto title="protos/a.proto"
--8<-- "a.proto"
```

````python
print("```")
````
"""


def test_a_page_parses_into_its_blocks() -> None:
    blocks = parse(PAGE, lambda path: f"// {path}\nsyntax = 'proto3';\n")
    assert [(b.lang, b.title) for b in blocks] == [
        ("sh", None),
        ("proto", "protos/a.proto"),
        ("python", None),
    ]
    assert blocks[1].text == "// a.proto\nsyntax = 'proto3';\n"
    assert blocks[2].text == 'print("```")\n'
    found = commands(blocks[0])
    assert [c.text for c in found] == [
        "mkdir x && cd x   # a trailing comment stays",
        "rpckit call http://h/S/M   -d '{\"a\": 1}'",
    ]
    assert found[0].prints == []
    assert found[1].prints == ['{"b":2}', "done"]


def test_a_block_ending_inside_a_continued_line_is_refused() -> None:
    with pytest.raises(ValueError, match="continued"):
        commands(Block("sh", None, "echo a \\\n", 1))


@given(st.lists(st.from_regex(r"[a-z][a-z ]{0,20}[a-z]", fullmatch=True), max_size=8))
def test_every_plain_line_is_one_command(lines: list[str]) -> None:
    block = Block("sh", None, "\n".join(lines) + "\n", 1)
    assert [c.text for c in commands(block)] == lines
