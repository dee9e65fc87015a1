from prefect_micro_agents.launcher.client import main

main()
