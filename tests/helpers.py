"""Small RecBole atomic datasets written by the tests themselves."""

from pathlib import Path


def write_atomic(folder, name, inter_rows, item_rows=None, inter_header=None, item_header=None):
    """Write ``<folder>/<name>/<name>.inter`` (and ``.item``); returns the data_path to use."""
    data = Path(folder) / name
    data.mkdir(parents=True, exist_ok=True)
    inter_header = inter_header or ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    lines = ["\t".join(inter_header)] + ["\t".join(map(str, row)) for row in inter_rows]
    (data / f"{name}.inter").write_text("\n".join(lines) + "\n")
    if item_rows is not None:
        item_header = item_header or ["item_id:token", "movie_title:token_seq", "release_year:token"]
        lines = ["\t".join(item_header)] + ["\t".join(map(str, row)) for row in item_rows]
        (data / f"{name}.item").write_text("\n".join(lines) + "\n")
    return str(Path(folder))
