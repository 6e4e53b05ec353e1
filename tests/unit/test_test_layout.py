"""The test folders are not packages, so pytest imports each test file by its base name: two files of
one name (one unit, one integration) stop the whole run at collection."""
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


def test_no_two_test_files_share_a_name():
    names = Counter(path.name for path in TESTS.rglob("*.py") if path.name != "__init__.py"
                    and path.name != "conftest.py")
    assert [name for name, count in names.items() if count > 1] == []
