"Shared by the benchmark scripts: the `--write` flag, and writing a results table beside the script (temporary file, then rename)."
import argparse, time
from pathlib import Path

def parser(script:str, doc:str)->argparse.ArgumentParser:
    "An argument parser described by the script's first docstring line, with `--write` (write the table next to it)."
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument('--write', action='store_true', help=f'write benchmarks/{Path(script).stem}.md')
    return ap

def write_table(script:str, # the benchmark's `__file__`: the table goes beside it, named after it
                title:str, # the page's heading
                intro:str, # a sentence or two after "Made by ..."
                body:str # the table (markdown)
               )->Path:
    "Write benchmarks/<script>.md atomically: a heading, which script made it and when, `intro`, then the table."
    from medmaas_nb.core import atomic_write
    out = Path(script).with_suffix('.md')
    with atomic_write(out, 'w') as f:
        f.write(f'# {title}\n\nMade by `benchmarks/{Path(script).name}` ({time.strftime("%Y-%m-%d")}). {intro}\n\n{body}\n')
    return out
