"""Dashboard: the Streamlit results app."""
