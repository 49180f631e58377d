from openmanager.cli import main

main()
