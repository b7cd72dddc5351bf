"""TransferLab's browser app: `streamlit run app.py`. Pages live in pages/, helpers in ui/, the engine in tl_core/."""

import streamlit as st

from ui.sidebar import show_context

st.set_page_config(page_title="TransferLab", page_icon=":material/model_training:", layout="wide")

page = st.navigation([
    st.Page("pages/data.py", title="Data", icon=":material/folder_open:", default=True),
    st.Page("pages/model.py", title="Model", icon=":material/tune:"),
    st.Page("pages/train.py", title="Train", icon=":material/monitoring:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/table_rows:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
    st.Page("pages/predict.py", title="Predict & export", icon=":material/upload_file:"),
])
try:
    page.run()
finally:
    show_context()  # after the page, so a dataset or run picked during this run shows at once
