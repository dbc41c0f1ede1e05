"""HTCondor DAG export: nodes, edges, variables and the submit files."""

import re

from desgw.engine.condor import REQUEST_MEMORY_MB, dag_node_name, write_condor_dag
from desgw.engine.graph import Task, TaskGraph
from desgw.io.settings import load_settings

ARGS = {"band": "i", "nite": 20170817, "rnum": 4, "pnum": 7, "cache": "persistent",
        "schema": "gw"}
SEARCH, T1, T2 = 668443, 668400, 668401
PASSWORD = "Zq9-secret-pw"


def _graph():
    tasks = []
    for e, ccds in ((T1, (32, 33)), (T2, (33,))):
        a = {**ARGS, "nite": 20170701, "template": True}
        ids = []
        for c in ccds:
            tasks.append(Task(f"se-{e}-{c}", "se", e, c, (), {**a, "extra_opts": ["-Y", "-C"]}))
            ids.append(f"se-{e}-{c}")
        tasks.append(Task(f"expcalib-{e}", "expcalib", e, None, tuple(ids),
                          {**a, "ccds": list(ccds)}))
    tasks.append(Task(f"se-{SEARCH}-33", "se", SEARCH, 33, (), {**ARGS, "template": False}))
    tasks.append(Task(f"expcalib-{SEARCH}", "expcalib", SEARCH, None, (f"se-{SEARCH}-33",),
                      {**ARGS, "ccds": [33], "template": False}))
    tasks.append(Task(f"diff-{SEARCH}-33", "diff", SEARCH, 33,
                      (f"se-{SEARCH}-33", f"expcalib-{SEARCH}", f"se-{T1}-32", f"se-{T1}-33",
                       f"expcalib-{T1}", f"se-{T2}-33", f"expcalib-{T2}"),
                      {**ARGS, "season": 67, "version": "gw8", "fakes": True, "full_copy": True,
                       "templates": [T1, T2], "template_ccds": {str(T1): [32, 33],
                                                                str(T2): [33]},
                       "snstar": f"SNSTAR_{SEARCH}_33_r4p7.LIST", "snveto": None,
                       "extra_opts": ["-O"]}))
    # search tasks listed first: the export still puts the template SE nodes first
    order = [t for t in tasks if t.expnum == SEARCH] + [t for t in tasks if t.expnum != SEARCH]
    return TaskGraph(tuple(order), {"search": {"expnum": SEARCH}})


def test_dag_and_submit_files(tmp_path):
    settings = load_settings(raw_dir=tmp_path / "raw", calib_dir=tmp_path / "calib",
                             refcat_dir=tmp_path / "refcat", out_root=tmp_path / "out",
                             db_url=f"postgresql://gw:{PASSWORD}@db.example.org/desgw",
                             environ={}, cwd=tmp_path)
    g = _graph()
    export = write_condor_dag(g, tmp_path / "dag", settings=settings,
                              executable="/opt/desgw/bin/desgw", retries=3)
    assert export.dag.name == f"desgw_pipeline_{SEARCH}.dag"
    assert sorted(export.submit_files) == ["diff", "expcalib", "se"]
    text = export.dag.read_text()

    jobs = re.findall(r"^JOB (\S+) (\S+)$", text, re.MULTILINE)
    assert len(jobs) == export.n_nodes == len(g)
    names = [j[0] for j in jobs]
    # template SE nodes come first (no parents: DAGMan runs them in parallel)
    n_template_se = 3
    assert all(n.startswith("se_6684") and not n.startswith(f"se_{SEARCH}")
               for n in names[:n_template_se])
    for node, sub in jobs:
        kind = node.split("_")[0]
        assert sub == str(export.submit_files[kind])
        assert f"RETRY {node} 3" in text
    # every dependency is an edge, and nothing else is
    edges = set()
    for parents, child in re.findall(r"^PARENT (.+) CHILD (\S+)$", text, re.MULTILINE):
        edges |= {(p, child) for p in parents.split()}
    assert edges == {(dag_node_name(d), dag_node_name(t.id)) for t in g.tasks for d in t.deps}

    def node_vars(node):
        line = re.search(rf"^VARS {node} (.*)$", text, re.MULTILINE).group(1)
        return dict(re.findall(r'(\w+)="([^"]*)"', line))

    v = node_vars(f"se_{T1}_32")
    assert v["expnum"] == str(T1) and v["ccd"] == "32" and v["tflag"] == "-t"
    assert v["extra"] == "-Y"  # -C is encoded in the graph (expcalib nodes): left out
    v = node_vars(f"expcalib_{T1}")
    assert v["ccds"] == "32,33" and v["nite"] == "20170701"
    v = node_vars(f"diff_{SEARCH}_33")
    assert v["templates"] == f"{T1},{T2}" and v["season"] == "67" and v["version"] == "gw8"
    assert v["tflag"] == "" and v["extra"].split() == ["-O", "-C", "-F", "-T",
                                                       f"SNSTAR_{SEARCH}_33_r4p7.LIST"]

    se_sub = export.submit_files["se"].read_text()
    assert f"request_memory = {REQUEST_MEMORY_MB}" in se_sub and REQUEST_MEMORY_MB == 3584
    assert "request_cpus = 1" in se_sub and "executable = /opt/desgw/bin/desgw" in se_sub
    assert re.search(r'arguments = "se -E \$\(expnum\) -r \$\(rnum\) -p \$\(pnum\) -n \$\(nite\) '
                     r'-b \$\(band\) -d \$\(cache\) -m \$\(schema\) -c \$\(ccd\) -s', se_sub)
    assert "-j" in export.submit_files["expcalib"].read_text()
    diff_sub = export.submit_files["diff"].read_text()
    assert "sediff -E $(expnum)" in diff_sub and "-S $(season)" in diff_sub
    assert f"DESGW_OUT='{tmp_path / 'out'}'" in diff_sub
    assert "getenv = DESGW_DB_URL" in diff_sub
    # the database URL (and its password) is never written to a file
    for path in [export.dag, *export.submit_files.values()]:
        assert PASSWORD not in path.read_text() and "db.example.org" not in path.read_text()
