"Run `nbdev_proc_nbs` without quarto: the same steps (quarto.yml refresh, module index, sidebar, notebook processing), minus its quarto installer."
from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar, proc_nbs
from nbdev.config import get_config
import nbdev.doclinks

if __name__ == '__main__':
    cfg = get_config()
    refresh_quarto_yml()
    nbdev.doclinks._build_modidx()
    nbdev_sidebar.__wrapped__(path=cfg.nbs_path)
    proc_nbs(cfg.nbs_path, n_workers=2)
    print(f"processed the notebooks into {cfg.config_path/'_proc'}")
