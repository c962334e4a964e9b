"Write README.md from nbs/index.ipynb without quarto (which `nbdev_readme` needs), or `--check` that they agree."
import sys, json
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def render(nb_path=root/'nbs'/'index.ipynb'):
    "Markdown of the notebook: markdown cells as they are, code cells (without directives) as python blocks with their text output"
    cells = json.loads(nb_path.read_text(encoding='utf-8'))['cells']
    out = []
    for c in cells:
        src = ''.join(c['source']).strip('\n')
        if c['cell_type'] == 'markdown': out.append(src)
        elif c['cell_type'] == 'code':
            lines = src.splitlines()
            if any(l.replace(' ', '') in ('#|hide', '#|include:false', '#|echo:false') for l in lines if l.startswith('#|')): continue
            code = '\n'.join(l for l in lines if not l.startswith('#|')).strip('\n')
            if code: out.append(f'```python\n{code}\n```')
            text = ''.join(''.join(o.get('text', '')) for o in c.get('outputs', []) if o.get('output_type') == 'stream')
            if text.strip(): out.append(f'```\n{text.rstrip()}\n```')
    return '<!-- Generated from nbs/index.ipynb by `python .ci/readme.py`; do not edit. -->\n\n' + '\n\n'.join(out) + '\n'

if __name__ == '__main__':
    readme, want = root/'README.md', render()
    if '--check' in sys.argv:
        if readme.read_text(encoding='utf-8') != want: sys.exit('README.md differs from nbs/index.ipynb: run `python .ci/readme.py` and commit.')
        print('README.md matches nbs/index.ipynb')
    else: readme.write_text(want, encoding='utf-8')
