"""The ShapeTune dashboard (``shapetune dashboard EXP_DIR ...``): a multipage Streamlit app."""

from pathlib import Path

import streamlit as st

from shapetune.dashboard.common import sidebar

PAGES = Path(__file__).parent / "views"  # not "pages/": that name would turn on Streamlit's legacy page discovery

st.set_page_config(page_title="ShapeTune", page_icon=":material/monitor_heart:", layout="wide")
page = st.navigation([
    st.Page(PAGES / "runs.py", title="Runs", icon=":material/table_chart:", default=True),
    st.Page(PAGES / "compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page(PAGES / "latents.py", title="Latent clusters", icon=":material/scatter_plot:"),
    st.Page(PAGES / "shapes.py", title="Shapes", icon=":material/view_in_ar:"),
    st.Page(PAGES / "export.py", title="Export", icon=":material/ios_share:"),
    st.Page(PAGES / "fetal.py", title="Fetal skull study", icon=":material/child_care:"),
])
sidebar()
page.run()
