"""`/v1/router/stats?first_part_window_s=S`: how far back the ingress's first-part path reaches."""
import pytest

from serve_app.openai_api import ApiError
from serve_app.telemetry.request_telemetry import FIRST_PART_PATH_KEPT_S, RECENT_S, first_part_window_s


def test_the_window_defaults_to_the_recent_seconds_and_takes_a_load_points_length():
    assert first_part_window_s({}) == RECENT_S
    assert first_part_window_s({"first_part_window_s": "34.5"}) == 34.5
    assert first_part_window_s({"first_part_window_s": str(FIRST_PART_PATH_KEPT_S)}) == FIRST_PART_PATH_KEPT_S


@pytest.mark.parametrize("text", ["0", "-1", "121", "nan", "inf", "soon", ""])
def test_a_window_out_of_range_or_not_a_number_is_a_400_naming_the_parameter(text):
    with pytest.raises(ApiError) as refused:
        first_part_window_s({"first_part_window_s": text})
    assert refused.value.status == 400 and refused.value.body()["error"]["param"] == "first_part_window_s"
