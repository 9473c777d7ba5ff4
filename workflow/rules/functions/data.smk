# Input functions of rules/data.smk (which includes this first): where each dataset and
# question set is read from.


def file_source(section, key, download):
    """The file a `path` or `url` entry of `section` is read from (`download` for a url; a
    path given beside a url is a local copy of its file, read instead); generated entries
    need none."""
    spec = config[section][key]
    if "path" in spec:
        return {"source": spec["path"]}
    if "url" in spec:
        return {"source": download}
    return {}


def dataset_source(wildcards):
    d = wildcards.dataset
    return file_source("datasets", d, layout.download(d))


def question_source(wildcards):
    q = wildcards.qset
    return file_source("questions", q, layout.questions_download(q))
