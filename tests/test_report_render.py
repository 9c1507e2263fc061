"""The report renders in a real browser: headless Chromium (Debian's `chromium`) takes a
screenshot of index.html, which must not be blank.  Skips with a reason where Chromium is absent
(.ci/run installs it)."""
import shutil
import subprocess

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                    "(.ci/run installs it)")
def test_report_renders_in_headless_chromium(tmp_path):
    import matplotlib.image as mpimg

    from reports.report import write_report
    from simulator import digits
    from simulator.configs import Config
    from simulator.replay import replay

    results = replay(digits.trace(), [Config(), Config("fp8_e4m3", "fp8_e4m3")], "propagated")
    page = write_report(results, tmp_path / "report")
    shot = tmp_path / "shot.png"
    run = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          "--hide-scrollbars", "--window-size=1000,1400",
                          f"--screenshot={shot}", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=180)
    assert shot.is_file(), run.stderr[-2000:]
    img = mpimg.imread(shot)[..., :3]
    # not blank: many distinct colours, and a good share of non-white pixels (text, tables,
    # the embedded plots)
    assert len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50
    assert np.mean(np.any(img < 0.9, axis=-1)) > 0.02
