from dicomguard.cli.main import app

app()
