"""``python -m diffunlearn config-doc``: the config reference table, generated from the schema."""


def add_arguments(parser) -> None:
    parser.add_argument("--schema", default=None, help="schema file (default: workflow/schemas/config.schema.yaml)")


def run(args) -> int:
    from diffunlearn.config import config_reference_markdown, load_schema

    print(config_reference_markdown(load_schema(args.schema)), end="")
    return 0
