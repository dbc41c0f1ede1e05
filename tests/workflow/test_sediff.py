"""`desgw sediff` (SEdiff.sh): flags, the task graph it runs, resume, and a real run."""


import pytest
from click.testing import CliRunner

from desgw.cli import main
from desgw.io.completion import diff_done_path, se_paths
from desgw.io.settings import load_settings
from desgw.workflow.dagmaker import make_dag, record_from_raw
from desgw.workflow.dagmaker_rc import DagmakerConfig
from desgw.workflow.sediff import parse_season, run_sediff

SEARCH = 880001


@pytest.fixture(scope="module")
def sim(workflow_sim):
    return workflow_sim


def _options(root, out):
    return ["--raw-dir", str(root / "raw"), "--calib-dir", str(root / "calib"),
            "--refcat", str(root / "refcat"), "--out", str(out)]


def _fake_se_products(out, expnum, ccds, args):
    for c in ccds:
        paths = se_paths(out, expnum, c, args)
        paths.immask.parent.mkdir(parents=True, exist_ok=True)
        for p in paths.all():
            p.write_bytes(b"stand-in")


def test_season_and_help():
    assert parse_season("dp67") == 67 and parse_season(12) == 12
    with pytest.raises(ValueError):
        parse_season("dpX")
    res = CliRunner().invoke(main, ["sediff", "-h"])
    assert res.exit_code == 0
    for letter in "ErpnbScdmvVTCjsYFOth":
        assert f"-{letter}," in res.output, letter


@pytest.mark.slow
def test_sediff_runs_the_difference_imaging_with_the_original_flags(sim, tmp_path, clean_env,
                                                                    fake_diff):
    root, truth = sim
    (template,) = truth.template_expnums
    out = tmp_path / "out"
    t_nite = record_from_raw(truth.raw_path(template)).nite
    base = {"band": "r", "rnum": 4, "pnum": 7, "cache": "persistent", "schema": "wsdiff"}
    # SE products of the template's overlapping CCDs and of the search CCD exist
    _fake_se_products(out, template, truth.ccdnums(template), {**base, "nite": t_nite})
    _fake_se_products(out, SEARCH, [28], {**base, "nite": 20190901})
    args = ["sediff", "-E", str(SEARCH), "-r", "4", "-p", "7", "-n", "20190901", "-b", "r",
            "-S", "dp67", "-c", "28", "-d", "persistent", "-m", "wsdiff", "-v", "gw8", "-s",
            "-F", "--no-fakes", "-T", "SNSTAR_mine.LIST", "-V", "SNVETO_mine.LIST",
            *_options(root, out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    (task,) = fake_diff
    assert task.search_expnum == SEARCH and task.ccdnum == 28
    assert task.template_expnums == (template,) and task.season == 67
    assert (task.rnum, task.pnum, task.cache, task.schema) == (4, 7, "persistent", "wsdiff")
    assert task.nite == 20190901 and task.version == "gw8" and task.fakes is False
    assert task.band == "r" and task.overwrite is False and task.full_copy is True
    assert f"templates: {template}" in res.output
    # the template's products exist: no task for it; the search CCD is one fused task (its
    # SE products exist, so only the difference imaging runs)
    assert "1 tasks: 1 done" in res.output
    done = diff_done_path(out, SEARCH, 28, {**base, "nite": 20190901, "season": 67})
    assert done.is_file()
    # -T/-V: the lists under the names given
    assert (done.parent / "SNSTAR_mine.LIST").read_text() == "# snstar_name\n"
    assert (done.parent / "SNVETO_mine.LIST").read_text() == "# snveto_name\n"

    # a second run finds the difference imaging done
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and len(fake_diff) == 1 and "1 skipped" in res.output

    # a template whose CCD product is missing is processed first: without its calibration
    # files it fails, and the difference imaging, left without a template, is blocked
    bad = _options(root, out)
    bad[bad.index("--calib-dir") + 1] = str(tmp_path / "nowhere")
    for p in se_paths(out, template, 22, {**base, "nite": t_nite}).all():
        p.unlink()
    res = CliRunner().invoke(main, [*args[:-len(bad)], *bad])
    assert res.exit_code == 1
    assert f"FAILED se-{template}-22: MissingFileError" in res.output
    assert "BLOCKED diff-880001-28: no template left" in res.output and len(fake_diff) == 1


@pytest.mark.slow
def test_template_mode_and_jump_to_calib(sim, tmp_path):
    root, truth = sim
    (template,) = truth.template_expnums
    out = tmp_path / "out"
    settings = load_settings(raw_dir=root / "raw", calib_dir=root / "calib",
                             refcat_dir=root / "refcat", out_root=out, environ={},
                             cwd=tmp_path)
    t_nite = record_from_raw(truth.raw_path(template)).nite
    base = {"band": "r", "rnum": 1, "pnum": 2, "cache": "scratch", "schema": "gw",
            "nite": t_nite}
    _fake_se_products(out, template, truth.ccdnums(template), base)
    rep = run_sediff(template, settings=settings, rnum=1, pnum=2, season=70,
                     template_mode=True, single_process=True, special_y=True,
                     progress=False)
    assert rep.ok and rep.graph.counts() == {"se": 4, "expcalib": 0, "diff": 0}
    assert all(t.args["template"] for t in rep.graph.tasks)
    assert len(rep.run.skipped) == 4 and any("-Y" in w for w in rep.warnings)

    # -j: no SE task for the search exposure; its calibration has none to wait for
    g = make_dag(SEARCH, settings=settings, config=DagmakerConfig(), search_se=False)
    assert f"se-{SEARCH}-28" not in g and g.task(f"expcalib-{SEARCH}").deps == ()
    assert f"expcalib-{SEARCH}" in g.task(f"diff-{SEARCH}-28").deps


@pytest.mark.slow
def test_real_sediff_with_calibration(sim, tmp_path, clean_env, fake_diff, monkeypatch):
    """Real SE of the templates' CCDs and calibration, then the fused search CCD (real SE,
    stand-in difference imaging) and the search calibration after it, in one process; a
    second run finds everything done."""
    import desgw.diff.pipeline_products as pipeline_products

    immask_reads = []
    read_immask = pipeline_products.read_immask
    monkeypatch.setattr(pipeline_products, "read_immask",
                        lambda *a, **k: immask_reads.append(a) or read_immask(*a, **k))
    root, truth = sim
    (template,) = truth.template_expnums
    out = tmp_path / "out"
    args = ["sediff", "-E", str(SEARCH), "-r", "1", "-p", "1", "-S", "67", "-c", "28", "-C",
            "-s", *_options(root, out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "7 tasks: 7 done" in res.output  # no separate search SE task
    (task,) = fake_diff
    assert task.template_expnums == (template,)
    nite = record_from_raw(truth.raw_path(SEARCH)).nite
    base = {"band": "r", "rnum": 1, "pnum": 1, "cache": "scratch", "schema": "gw",
            "nite": nite}
    for expnum, ccds in ((SEARCH, [28]), (template, truth.ccdnums(template))):
        e_args = {**base, "nite": record_from_raw(truth.raw_path(expnum)).nite}
        assert all(se_paths(out, expnum, c, e_args).complete() for c in ccds)
    # each template CCD was prepared for difference imaging right after its SE (the search
    # CCD, processed as a search, was not)
    prepared = sorted(p.name for p in out.rglob("*_tmplprep-*.dgt"))
    assert len(prepared) == len(truth.ccdnums(template)), prepared
    assert all(name.startswith(f"D{template:08d}_") for name in prepared)
    # ... from the SE result in memory: no immask was read back to make them
    assert immask_reads == []
    res = CliRunner().invoke(main, args)
    # the template's products exist now: it gets no task; the search's tasks are skipped
    assert res.exit_code == 0 and "2 tasks: 0 done, 2 skipped" in res.output, res.output
    assert len(fake_diff) == 1


def test_nothing_differenced_is_a_failure(sim, tmp_path, clean_env, fake_diff):
    """Issue 10 case 7: with its only template blacklisted sediff differences nothing: exit 1
    and a line that says so (it exited 0)."""
    root, truth = sim
    (template,) = truth.template_expnums
    out = tmp_path / "out"
    base = {"band": "r", "rnum": 4, "pnum": 7, "cache": "scratch", "schema": "gw"}
    _fake_se_products(out, SEARCH, [28], {**base, "nite": 20190901})
    black = tmp_path / "blacklist"
    black.write_text(f"{template}\n")
    calib = tmp_path / "calib"  # the simulated calibrations without the linearity table
    calib.mkdir()
    for p in (root / "calib").iterdir():
        if not p.name.startswith("linearity"):
            (calib / p.name).symlink_to(p)
    options = _options(root, out)
    options[options.index("--calib-dir") + 1] = str(calib)
    args = ["sediff", "-E", str(SEARCH), "-r", "4", "-p", "7", "-n", "20190901", "-S", "5",
            "-c", "28", "-s", "--blacklist", str(black), *options]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    assert "nothing was differenced: no usable template overlaps the CCDs" in res.output
    assert "warning: no linearity table" in res.output  # sediff said nothing of it
    assert not fake_diff
