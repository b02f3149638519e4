"""The paper's studies (Tables I–IV and VII, the baselines of Tables V–VI, Figs. 3, 6, 7–8
and 9) as data (definitions.py), run as folders of resumable runs (runner.py) and reported
beside the paper's published values (paper.py, report.py, figures.py)."""
from muldml.studies.definitions import ALL, NAMES, STUDIES, Cell, Study, studies_for

__all__ = ["ALL", "NAMES", "STUDIES", "Cell", "Study", "studies_for"]
