"""Sphinx configuration of the course website (`make site`; scripts/build_site.py assembles the pages).

The notebooks are shown as `make run` executed them (myst-nb with execution off): nothing runs at build time,
and the build needs no network.
"""

project = "maelib"
author = "the maelib authors"
copyright = "the maelib authors; notebooks and code under the project's licence"

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.viewcode"]
nb_execution_mode = "off"  # the outputs are those of `make run`
nb_merge_streams = True
myst_heading_anchors = 3
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header"]  # the notebooks number their sections under one title

# every public name gets an entry, so that each notebook's links to the API resolve
autodoc_default_options = {"members": True, "undoc-members": True, "member-order": "bysource",
                           "show-inheritance": True}
autodoc_typehints = "description"
autodoc_inherit_docstrings = False  # Lightning's hooks keep their own documentation, not copied onto ours
add_module_names = False

html_theme = "sphinx_book_theme"
html_title = "maelib: a course on Masked Autoencoders"
html_static_path = ["_static"]
html_theme_options = {
    "repository_url": "https://github.com/maelib/maelib",
    "repository_branch": "main",
    "path_to_docs": "",
    "use_repository_button": True,
    "launch_buttons": {"colab_url": "https://colab.research.google.com", "binderhub_url": "https://mybinder.org",
                       "notebook_interface": "jupyterlab"},
    "show_toc_level": 2,
}
html_last_updated_fmt = None


def docstring_as_written(app, what, name, obj, options, lines):
    """maelib's docstrings are plain text laid out by hand (shapes aligned in columns, examples indented), as in
    nanoGPT, not reStructuredText: show each one as written, in a literal block."""
    if lines:
        lines[:] = ["::", ""] + ["   " + line for line in lines] + [""]


def setup(app):
    app.connect("autodoc-process-docstring", docstring_as_written)
