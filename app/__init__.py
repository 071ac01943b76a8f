"""Streamlit app shell: entry point, navigation and UI pieces shared by pages."""
