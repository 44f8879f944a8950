from __future__ import annotations

import keyguard.oauth
import keyguard.oauth.asgi
import keyguard.oauth.wsgi
from tests.test_exports import _isort_style


def test_the_oauth_all_is_sorted_and_complete() -> None:
    for module in (keyguard.oauth, keyguard.oauth.asgi, keyguard.oauth.wsgi):
        names = module.__all__
        assert names == sorted(names, key=_isort_style), module.__name__
        for name in names:
            assert hasattr(module, name), name
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and not isinstance(value, type(keyguard))
            and (
                getattr(value, "__module__", "") == module.__name__
                or (
                    module is keyguard.oauth
                    and getattr(value, "__module__", "").startswith("keyguard.oauth.")
                )
            )
        }
        assert public <= set(names), public - set(names)
