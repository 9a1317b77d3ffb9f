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
                body:str, # the table (markdown)
                stem:str|None=None # the page's name, if not the script's (a script that makes several pages)
               )->Path:
    "Write benchmarks/<script>.md atomically: a heading, which script made it and when, `intro`, then the table."
    from medmaas_nb.core import atomic_write
    out = Path(script).with_name(f'{stem or Path(script).stem}.md')
    with atomic_write(out, 'w') as f:
        f.write(f'# {title}\n\nMade by `benchmarks/{Path(script).name}` ({time.strftime("%Y-%m-%d")}). {intro}\n\n{body}\n')
    return out

def machine()->str:
    "The machine in a few words, for a table's introduction: cores and Python version."
    import os, platform
    return f'{os.cpu_count()} cores, Python {platform.python_version()}.'

def baseline_commit(checkout:Path # a checkout given with `--baseline` (e.g. `git worktree add DIR COMMIT`)
                   )->str:
    "The short commit of a baseline checkout (its folder name if git cannot tell)."
    import subprocess
    out = subprocess.run(['git', '-C', str(checkout), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
    return out or Path(checkout).name

def publish(script:str, title:str, intro:str, table:str, write:bool, baseline:Path|None=None, how:str='', stem:str|None=None)->None:
    "Print the table, or with `write` write it beside the script; a baseline checkout is named by its commit, with `how`."
    if baseline is not None: intro += f' Baseline: commit `{baseline_commit(baseline)}`{how}.'
    print(write_table(script, title, intro, table, stem) if write else table)
