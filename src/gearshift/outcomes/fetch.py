"""Download the recorded datasets from their public sources, verified against SHA-256 checksums.

`fetch(name)` downloads each file of a dataset into the data folder (see datasets.data_dir). Files
already present with the right checksum are skipped; a download goes to `<file>.part` and is renamed
into place only after its size and SHA-256 match the manifest below, so an interrupted or corrupted
download never leaves a file that looks complete. An interrupted `.part` is resumed with an HTTP
Range request when the server supports it.

Sources (the manifest's checksums were computed from these files):
- RouteLLM (Apache-2.0): https://raw.githubusercontent.com/lm-sys/RouteLLM/main/routellm/evals/
  (`gsm8k/...`, `mmlu/responses/mmlu_<subject>.csv`, `mmlu/contaminated_prompts.jsonl`) and LICENSE.
- RouterBench subsets as redistributed by RouterDC:
  https://raw.githubusercontent.com/shuhao02/RouterDC/main/datasets/routerbench_zs/

`base_url` replaces the sources with one mirror laid out like the data folder
(`<base_url>/routellm/gsm8k/gsm8k_responses.csv`, `<base_url>/routerbench/mbpp_test.csv`, ...).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROUTELLM_RAW = "https://raw.githubusercontent.com/lm-sys/RouteLLM/main/"
ROUTERDC_RAW = "https://raw.githubusercontent.com/shuhao02/RouterDC/main/datasets/routerbench_zs/"

# sha256  bytes  path in the data folder
MANIFEST = """\
43070e2d4e532684de521b885f385d0841030efa2b1a20bafb76133a5e1379c1  11356  routellm/LICENSE
1f5a7be02148ee0f7f306d233ba76a6573c826cee9499a34f8ef938a1a84c234  6282  routellm/gsm8k/contaminated_prompts.jsonl
1f38ed03db354a020f71e92022383dc3cf37bbf2694dea4daaeea7b6c43fe57b  1291062  routellm/gsm8k/gsm8k_responses.csv
3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14  749738  routellm/gsm8k/test.jsonl
9606c968198eabf5efa46ccba31286392c8e35525d83c86661618ffc5ec6d40e  4498  routellm/mmlu/contaminated_prompts.jsonl
67e564eea42e71fbfcaf616972df952c316e5538376da1c16d691177458b96b9  20003  routellm/mmlu/mmlu_abstract_algebra.csv
53ebea8257805eeecc25713728264b8235cffad7b720962a3eafc92fd27ef537  33922  routellm/mmlu/mmlu_anatomy.csv
49915ece9dfe8aadbd351f221ada2ea86b6f832ce49fa64d1622a0f066c19794  47647  routellm/mmlu/mmlu_astronomy.csv
13a45bed754ffe8f0e7f0348e69085c648a1ae0e91aa76cd5e6906fa45f7ec8e  33854  routellm/mmlu/mmlu_business_ethics.csv
5ea37709bfbad4df7a3fcbd8973413f7645a2adfef9772490f09d3f293ffe882  64226  routellm/mmlu/mmlu_clinical_knowledge.csv
c38620db5b9f6f1b0fde7bc8d8299b8e2305c4dacbb1567c904cd51618d627d5  49612  routellm/mmlu/mmlu_college_biology.csv
78ca6ba22ff25c8fdb93e1c6e84384e72522106c73ed5ee9fed620928ce395ce  25362  routellm/mmlu/mmlu_college_chemistry.csv
8a7b2a87a36b428c9d1a8f12ce3b01cf7920f0a7146d6f8a111da6749c332da3  43299  routellm/mmlu/mmlu_college_computer_science.csv
3f22f42779c48509c66e21d7d1fc3054eb0256c1b5b772bb6d9a3af1b253238b  25385  routellm/mmlu/mmlu_college_mathematics.csv
63d71d29e630fc6538e1705a51f4267bdbbdea0fa7ee85056ad7d6f8f10d3987  83407  routellm/mmlu/mmlu_college_medicine.csv
8162a0660d4ef7b963088e0a176d4b8630096127a0d0b5ed003f649cbad34455  30851  routellm/mmlu/mmlu_college_physics.csv
26446faf7460f03aa2d82a05c170faedb5cbf6d7bdda133b1146229107097d1c  27712  routellm/mmlu/mmlu_computer_security.csv
ea40473704b64cb60d564ffe91962848ec6fc3106b40089d08cebc98d5c7226d  42034  routellm/mmlu/mmlu_conceptual_physics.csv
927b4d877cec8697f3b8378bb7e7c7a279babaea2edacf350ea50908701907b9  47278  routellm/mmlu/mmlu_econometrics.csv
de2fb7c2e9addb4808f5b3f7c79efbfdfb86216235bb7dc28ab70bc53664f11e  26003  routellm/mmlu/mmlu_electrical_engineering.csv
88697ff0d238b5852c7a959379dc8b0b45c3554ed4b2ee7cbb7ffc34e06c7cf5  72419  routellm/mmlu/mmlu_elementary_mathematics.csv
094a462626468569ad595c03e66e73a299188cfa175248b499dba94e005506e6  50588  routellm/mmlu/mmlu_formal_logic.csv
6f75ddf7d6eb94ac0471529a85ff7f8b738c9f4055185b3114eed26393222d06  19055  routellm/mmlu/mmlu_global_facts.csv
444982fc2c750ab8cbc6942a0c0267040aa5023c1d2364247d20e2a28b4e325d  111417  routellm/mmlu/mmlu_high_school_biology.csv
ae5e62479365dcd056354c568f60da65b1df9f1de57dda3953a8e9933a6f12e4  59694  routellm/mmlu/mmlu_high_school_chemistry.csv
d156d9448a6e899f7f976a0afac148a928bf709a2baa573f0c407854a25bdb11  45133  routellm/mmlu/mmlu_high_school_computer_science.csv
c64afd6c5e30ef0cd5c10beab961ac05e7ba55d6b48cd93bf6ad0a45f90515bf  271527  routellm/mmlu/mmlu_high_school_european_history.csv
21b12044be4a6b9813880ad46372006dc0846e7f85fa46883bb73dbd90fba30a  43125  routellm/mmlu/mmlu_high_school_geography.csv
2791689acc61775a5857f4f3a5fd248d30552553c3a96f6ee63dc28285437259  67164  routellm/mmlu/mmlu_high_school_government_and_politics.csv
73b931a2a06ba74a5c9f1e005d45a25004e36be5d075d98f8ebcf89b3fda367b  119896  routellm/mmlu/mmlu_high_school_macroeconomics.csv
151b2a736981b7b20f3bad99de6a573e4692d68cf87020e943b601b70bb37390  56703  routellm/mmlu/mmlu_high_school_mathematics.csv
f7ea151efb4c9d96374db3358ac7e97e4d8349e26715f61dac98bc9d854ca046  77019  routellm/mmlu/mmlu_high_school_microeconomics.csv
1e2103fc8f7f1cfac7c00952b26db2418acab092486af78a9c51c551ae2ff9be  60489  routellm/mmlu/mmlu_high_school_physics.csv
d11604f2c7a2425258d5b9a285ef71737c011cc3a91456890f088a0ee4c55212  162370  routellm/mmlu/mmlu_high_school_psychology.csv
de6642bcd93d7a80e7bbd73d987a44d67b6e537b47749ddc518122fd582703bb  112040  routellm/mmlu/mmlu_high_school_statistics.csv
a71186d143363e203b2f216d78c9d21f10cca51de455ef176c9c01b77f546592  298464  routellm/mmlu/mmlu_high_school_us_history.csv
e9c52305977dc37b3e48eee727ad933b2d24d96ca3a06aec865a8900b1e87d2c  380424  routellm/mmlu/mmlu_high_school_world_history.csv
0d6c4109b4f61f138781ce50bbc60ff2e90dd451694d3926a088be5a5bd88aa8  47361  routellm/mmlu/mmlu_human_aging.csv
20916037e3012731883f926738daf47ed994f74ba25518fdb7f0df72a81143fd  32866  routellm/mmlu/mmlu_human_sexuality.csv
e389b886e3e1570bfdf798f6f56dc3c675350200c5baf0f41a0766294ff312eb  54224  routellm/mmlu/mmlu_international_law.csv
7e94c3849231be7b2654db11e44ee51531f8474e300fe83b1e05438df3038f0b  34614  routellm/mmlu/mmlu_jurisprudence.csv
fa2d94cd2e901621aaebd0a7e64560b5dbbe4249086795398533eed2561c0c1e  51102  routellm/mmlu/mmlu_logical_fallacies.csv
9301e928481be6e20b3541e1ac112b25a4a71338b21592978c0d219cb6240020  34575  routellm/mmlu/mmlu_machine_learning.csv
a00b12ab0265918f9335a85ce02303ddaea0491a7b099f88a05986eeac4aa4fb  20594  routellm/mmlu/mmlu_management.csv
3ee0b6560ebe0eb4f14ce63227d6f6ec8cb8b6e57e345eae9460be742672f36c  64281  routellm/mmlu/mmlu_marketing.csv
7c830f87dcbc0029137b3400cf361931831cb57dda55717a64e72ad74663d5df  21444  routellm/mmlu/mmlu_medical_genetics.csv
c2e1a5b0394a8429f55b6340e1865166ac17ec6b3571523005e413b3b2843b9f  151860  routellm/mmlu/mmlu_miscellaneous.csv
8b2b973b1987b724f39fd10970604d7f1150747a0db9ce766c193bd978c9d0c4  109870  routellm/mmlu/mmlu_moral_disputes.csv
78ded6fdca1cd0d5c4ed16a5ed4aebf2e98401b9c00b20e565e6cce5bf1153c7  379235  routellm/mmlu/mmlu_moral_scenarios.csv
ba197fbf4b6c5034414d66ea7747211056cf5f709f83d919d2d856245720cc51  94113  routellm/mmlu/mmlu_nutrition.csv
2f30ad01ab529ddea00dff4ff87e950fef838a78754c94f6884120628a7d0591  81836  routellm/mmlu/mmlu_philosophy.csv
afc816d4b78814627bae9b8c3730a9bb72bd958ff6259fd36c981777cfe83753  91362  routellm/mmlu/mmlu_prehistory.csv
fe5ee976a625832ecf624086103619523d063a3a728c60681b6a53c55b638a37  126233  routellm/mmlu/mmlu_professional_accounting.csv
60a4308df4f481ff8840590b29061835207b50a9f06a9fc68baf12b114f7e2e0  1902501  routellm/mmlu/mmlu_professional_law.csv
6fda30b523e4e2ce8b1f18e871a0722190a4ac81ec377a75fbba4a63e0b510f7  219104  routellm/mmlu/mmlu_professional_medicine.csv
bfb3a7fb653e2b195d3fa258894af64d3f1c3dbd4059c1e0feb728131d20f9b3  229411  routellm/mmlu/mmlu_professional_psychology.csv
2196279ea2535fbda62509c3156209b764459a3d515a9ba84b69cf16bb4c27d0  29421  routellm/mmlu/mmlu_public_relations.csv
1354bb17649f95b7dd8ef3179e22329abe6bef84e639d63370ae9e80b2509905  206239  routellm/mmlu/mmlu_security_studies.csv
903ba6259b13f2877607abef22b7b19cb575104268d4ced615e3129d3caafb47  67343  routellm/mmlu/mmlu_sociology.csv
f1c1d266753a3f161e2018c16c6948fb78c7f5e506a10b4fc0441049962a6c69  29024  routellm/mmlu/mmlu_us_foreign_policy.csv
d525f1ba88982befd42140e73822fe940e73db82bbdcdd569d95f26c3dd41e68  39794  routellm/mmlu/mmlu_virology.csv
49dc00d44e069ecaac6a7f7e2188f4a8bce5df56ee91bb15f55519d07f64af8e  26268  routellm/mmlu/mmlu_world_religions.csv
7bffb55faca2e1f9d19f7197c652884780a1e0f7fe14bad5b2b1c6afbe7a6769  1102387  routerbench/arc_challenge_test.csv
59e044850520be06f74dd9766b9ab4621d783f7fa5269d7dda118b9abb115d78  2579191  routerbench/arc_challenge_train.csv
156fb843b706b765162d74f5fc4928322be5041791b45bd3e1bd732d998c4032  1322291  routerbench/mbpp_test.csv
2a985adc3a3016b5ae4d62229722cdff9ece58aa1338206a6b12e4957304452b  3128944  routerbench/mbpp_train.csv
de7c8689d4b682c860b660988808ee2e40366b12076811e7891081facec4a2e1  696034  routerbench/winograde_test.csv
f6d54caab59bebb9facf3407c515a07a20faf4e75c639b7e91988ceaf312906a  1623934  routerbench/winograde_train.csv
"""

# Dataset name -> path prefixes of its files. LICENSE travels with every RouteLLM subset.
DATASETS: dict[str, tuple[str, ...]] = {
    "routellm/gsm8k": ("routellm/gsm8k/", "routellm/LICENSE"),
    "routellm/mmlu": ("routellm/mmlu/", "routellm/LICENSE"),
    "routellm": ("routellm/",),
    "routerbench": ("routerbench/",),
    "all": ("routellm/", "routerbench/"),
}

CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A download failed: the message names the file and the URL."""


class ChecksumError(FetchError):
    """A downloaded file's size or SHA-256 differs from the manifest; it was not saved."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str  # relative to the data folder
    sha256: str
    size: int

    def upstream_url(self) -> str:
        """Where the file lives publicly."""
        p = self.path
        if p == "routellm/LICENSE":
            return ROUTELLM_RAW + "LICENSE"
        if p.startswith("routellm/mmlu/mmlu_"):
            return ROUTELLM_RAW + "routellm/evals/mmlu/responses/" + p.removeprefix("routellm/mmlu/")
        if p.startswith("routellm/"):
            return ROUTELLM_RAW + "routellm/evals/" + p.removeprefix("routellm/")
        if p.startswith("routerbench/"):
            return ROUTERDC_RAW + p.removeprefix("routerbench/")
        raise FetchError(f"{p}: no public source known")

    def url(self, base_url: str | None = None) -> str:
        return f"{base_url.rstrip('/')}/{self.path}" if base_url else self.upstream_url()


def manifest() -> list[FileEntry]:
    """Every file the downloader knows, with its checksum and size."""
    out = []
    for line in MANIFEST.splitlines():
        if line.strip():
            digest, size, path = line.split(None, 2)
            out.append(FileEntry(path=path.strip(), sha256=digest, size=int(size)))
    return out


def files(name: str) -> list[FileEntry]:
    """The files of a dataset name (one of DATASETS)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    prefixes = DATASETS[name]
    return [e for e in manifest() if any(e.path == p or (p.endswith("/") and e.path.startswith(p)) for p in prefixes)]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def status(name: str, dest: str | Path | None = None) -> list[tuple[FileEntry, str]]:
    """(file, state) for each file of a dataset: "ok", "missing", "partial" or "corrupt"."""
    root = _dest(dest)
    out = []
    for e in files(name):
        target = root / e.path
        if target.is_file():
            ok = target.stat().st_size == e.size and sha256_of(target) == e.sha256
            out.append((e, "ok" if ok else "corrupt"))
        elif target.with_name(target.name + ".part").exists():
            out.append((e, "partial"))
        else:
            out.append((e, "missing"))
    return out


def _dest(dest: str | Path | None) -> Path:
    if dest is not None:
        return Path(dest).expanduser()
    from gearshift.outcomes.datasets import data_dir

    return data_dir()


Progress = Callable[[FileEntry, int], None]  # (file, bytes received so far in total for that file)


def _download(e: FileEntry, url: str, part: Path, timeout: float, progress: Progress | None) -> None:
    have = part.stat().st_size if part.exists() else 0
    if have > e.size:
        part.unlink()
        have = 0
    headers = {"User-Agent": "gearshift-datasets"}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (http/https URLs we build)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have == e.size:
            return  # the .part is already complete
        raise FetchError(f"{e.path}: HTTP {err.code} {err.reason} from {url}") from None
    except (urllib.error.URLError, OSError) as err:
        raise FetchError(f"{e.path}: cannot download {url}: {getattr(err, 'reason', err)}") from None
    with resp:
        mode = "ab" if have and resp.status == 206 else "wb"
        received = have if mode == "ab" else 0
        with part.open(mode) as f:
            while True:
                try:
                    block = resp.read(CHUNK)
                except OSError as err:
                    raise FetchError(f"{e.path}: download from {url} broke off after {received} bytes: {err}") from None
                if not block:
                    break
                f.write(block)
                received += len(block)
                if progress:
                    progress(e, received)


def fetch(name: str, dest: str | Path | None = None, base_url: str | None = None, *,
          timeout: float = 60.0, progress: Progress | None = None) -> list[Path]:
    """Download a dataset's files into `dest` (default: the data folder); return their paths.

    Skips files already present with the right checksum. Raises ChecksumError naming the file when
    a download does not match the manifest (the bad bytes are deleted, nothing is renamed into
    place) and FetchError when a server fails.
    """
    root = _dest(dest)
    paths = []
    for e in files(name):
        target = root / e.path
        paths.append(target)
        if target.is_file() and target.stat().st_size == e.size and sha256_of(target) == e.sha256:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        url = e.url(base_url)
        _download(e, url, part, timeout, progress)
        size = part.stat().st_size
        digest = sha256_of(part)
        if size != e.size or digest != e.sha256:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"{e.path}: downloaded file from {url} does not match the manifest "
                f"(sha256 {digest[:16]}..., {size} bytes; expected {e.sha256[:16]}..., {e.size} bytes); not saved")
        os.replace(part, target)
    return paths


__all__ = ["DATASETS", "ChecksumError", "FetchError", "FileEntry", "fetch", "files", "manifest", "sha256_of", "status"]
