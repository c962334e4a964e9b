"Package metadata comes from `settings.ini`, the single source nbdev also reads."
from configparser import ConfigParser
from pathlib import Path
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read(Path(__file__).parent/'settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

for k in 'version description keywords author author_email license lib_name user min_python git_url'.split():
    assert cfg.get(k), f'settings.ini is missing `{k}`'

licenses = {'apache2': 'Apache-2.0'}  # SPDX expression: setuptools deprecates license classifiers
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
py_versions = '3.9 3.10 3.11 3.12 3.13'.split()
min_python = cfg['min_python']

requirements = cfg.get('requirements', '').split()
dev_requirements = cfg.get('dev_requirements', '').split()
readme = Path(__file__).parent/'README.md'

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=readme.read_text(encoding='utf-8') if readme.exists() else '',
    long_description_content_type='text/markdown',
    keywords=cfg['keywords'],
    author=cfg['author'], author_email=cfg['author_email'],
    license=licenses[cfg['license']],
    url=cfg['git_url'],
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title()] +
                ['Programming Language :: Python :: ' + v for v in py_versions[py_versions.index(min_python):]],
    packages=setuptools.find_packages(include=['fasterai', 'fasterai.*']),
    include_package_data=True,
    install_requires=requirements,
    extras_require={'dev': dev_requirements},
    python_requires='>=' + min_python,
    zip_safe=False,
    entry_points={'nbdev': [f'{cfg["lib_path"]}={cfg["lib_path"]}._modidx:d']},
)
